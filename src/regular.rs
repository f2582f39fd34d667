//! Reading files from folders devami does not control (a blueprint, a submit file, a price table,
//! a state file): regular files only, so that a FIFO or a device put in their place never blocks a
//! read; JSON documents that must be one object.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// How many characters of a JSON error a message keeps.
const MESSAGE_CHARS: usize = 300;

/// Reads a file that must be a regular file (a symbolic link to one is followed). Anything else is
/// refused before it is opened, so that reading a FIFO or a device never blocks: a folder with
/// the usual `Is a directory`, the rest with what it is.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read`] as text, for files that hold text (a submit file, a price table): invalid
/// UTF-8 is an `InvalidData` error saying where.
pub fn read_text(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it is not valid UTF-8 text (invalid byte at offset {}); save it as UTF-8",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Opens a regular file for reading; a FIFO or a device is refused before it is opened, so that
/// no read blocks.
pub fn open(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let meta = fs::metadata(path)?;
    check(&meta)?;
    // O_NONBLOCK: should the path be swapped for a FIFO after the check, opening it does not wait
    // for a writer, and the second check below refuses it.
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    check(&file.metadata()?)?;
    Ok(file)
}

/// An error unless `meta` describes a regular file.
pub fn check(meta: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let what = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {what}, not a regular file; devami reads only regular files"),
    ))
}

/// Deserializes a JSON document that must be an object. serde's derived structs also read a
/// list (field by field, in order), so a list is refused here first. The error is a message,
/// escaped and cut (serde quotes unknown field names whole).
pub fn from_json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    let message = |e: serde_json::Error| crate::error::clipped(&e.to_string(), MESSAGE_CHARS);
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{') {
        let kind = match serde_json::from_slice::<serde_json::Value>(bytes).map_err(message)? {
            serde_json::Value::Array(_) => "a list",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Null | serde_json::Value::Object(_) => "null",
        };
        return Err(format!("it must hold one JSON object, and it holds {kind}"));
    }
    serde_json::from_slice(bytes).map_err(message)
}
