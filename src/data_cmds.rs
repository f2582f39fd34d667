//! Data in the analysis bucket (named by the blueprint's PipelineName): `upload`, `download`, `ls`.
//!
//! Files and whole folders go up and down through the backend's object store (aws-sdk-s3 for both
//! backends), so what a job reads is exactly what was uploaded. A download never leaves a partial
//! file under its final name. Default keys follow the NeuroCAAS layout: an upload without a key
//! goes to `<first affiliate>/inputs/<file name>`.

use std::path::{Path, PathBuf};

use crate::clock;
use crate::error::{Error, Result};
use crate::image_cmds::human_bytes;
use crate::output::Output;
use crate::parse::Args;
use crate::session::DevAmi;

impl DevAmi {
    fn bucket(&self) -> Result<String> {
        Ok(self.bp()?.pipeline_name()?.to_string())
    }

    /// `upload LOCAL [KEY]`.
    pub(crate) fn cmd_upload(&mut self, a: &Args) -> Result<Output> {
        let local = PathBuf::from(a.str("local").unwrap_or_default());
        let meta = std::fs::metadata(&local).map_err(|e| Error::io("read", &local, e))?;
        let bucket = self.bucket()?;
        let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let key = match a.str("key") {
            Some(k) => k.trim_start_matches('/').to_string(),
            None => {
                let group = self.bp()?.affiliates().into_iter().next().ok_or_else(|| {
                    Error::Refused("upload: give a KEY (the blueprint has no affiliate group for the default `GROUP/inputs/`)".into())
                })?;
                format!("{group}/inputs/{name}")
            }
        };
        let files: Vec<(PathBuf, String)> = if meta.is_dir() {
            let base = key.trim_end_matches('/').to_string();
            walk(&local)?
                .into_iter()
                .map(|p| {
                    let rel = p.strip_prefix(&local).unwrap_or(&p).to_string_lossy().into_owned();
                    (p, format!("{base}/{rel}"))
                })
                .collect()
        } else {
            let key = if key.ends_with('/') { format!("{key}{name}") } else { key.clone() };
            vec![(local.clone(), key)]
        };
        let mut total = 0;
        for (path, key) in &files {
            let cloud = self.cloud()?;
            total +=
                cloud.call("uploading", cloud.backend.upload_file(&bucket, key, path, &mut |_, _| {}))?;
        }
        Ok(Output::text(match files.as_slice() {
            [(_, key)] => {
                format!("uploaded {} to s3://{bucket}/{key} ({})", local.display(), human_bytes(total))
            }
            _ => format!("uploaded {} files ({}) to s3://{bucket}/{key}", files.len(), human_bytes(total)),
        }))
    }

    /// `download KEY [LOCAL]`.
    pub(crate) fn cmd_download(&mut self, a: &Args) -> Result<Output> {
        let key = a.str("key").unwrap_or_default().trim_start_matches('/').to_string();
        let bucket = self.bucket()?;
        let cloud = self.cloud()?;
        let objects = cloud.call("listing the bucket", cloud.backend.list_objects(&bucket, &key))?;
        let exact = objects.iter().any(|o| o.key == key);
        let name = key.trim_end_matches('/').rsplit('/').next().unwrap_or("download").to_string();
        let local = a.str("local").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(&name));
        if exact {
            let target = if local.is_dir() { local.join(&name) } else { local };
            let cloud = self.cloud()?;
            let n = cloud
                .call("downloading", cloud.backend.download_file(&bucket, &key, &target, &mut |_, _| {}))?;
            return Ok(Output::text(format!(
                "downloaded s3://{bucket}/{key} to {} ({})",
                target.display(),
                human_bytes(n)
            )));
        }
        let prefix = if key.is_empty() || key.ends_with('/') { key.clone() } else { format!("{key}/") };
        let under: Vec<_> =
            objects.into_iter().filter(|o| o.key.starts_with(&prefix) && !o.key.ends_with('/')).collect();
        if under.is_empty() {
            return Err(Error::Refused(format!(
                "s3://{bucket}/{key} does not exist; `ls` shows what the bucket holds"
            )));
        }
        let mut total = 0;
        for o in &under {
            let rel = &o.key[prefix.len()..];
            if rel.split('/').any(|seg| seg == ".." || seg == ".") {
                return Err(Error::Refused(format!(
                    "refusing to download key `{}`: it leaves the target folder",
                    o.key
                )));
            }
            let target = local.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
            }
            let cloud = self.cloud()?;
            total += cloud
                .call("downloading", cloud.backend.download_file(&bucket, &o.key, &target, &mut |_, _| {}))?;
        }
        Ok(Output::text(format!(
            "downloaded {} files ({}) from s3://{bucket}/{prefix} to {}",
            under.len(),
            human_bytes(total),
            local.display()
        )))
    }

    /// `ls [PREFIX]`.
    pub(crate) fn cmd_ls(&mut self, a: &Args) -> Result<Output> {
        let prefix = a.str("prefix").unwrap_or("").to_string();
        let bucket = self.bucket()?;
        let cloud = self.cloud()?;
        let objects = cloud.call("listing the bucket", cloud.backend.list_objects(&bucket, &prefix))?;
        if objects.is_empty() {
            return Ok(Output::text(format!("s3://{bucket}/{prefix} is empty")));
        }
        let rows = objects
            .iter()
            .map(|o| {
                vec![
                    o.key.clone(),
                    human_bytes(o.size),
                    o.modified.map(clock::format).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        Ok(Output::table(&["key", "size", "modified (UTC)"], rows))
    }
}

/// Every file under `dir`, sorted.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io("read", &d, e))? {
            let entry = entry.map_err(|e| Error::io("read", &d, e))?;
            let ft = entry.file_type().map_err(|e| Error::io("read", entry.path(), e))?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}
