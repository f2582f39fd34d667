//! Tests that go through the whole endpoint (served in-process, or as the daemon), and the
//! [`fixture`] other modules' tests serve their buckets with.

use super::service::{sidecar_name, sidecar_too_long};
use super::uploads::upload_of;
use super::*;
use crate::backend::BackendError;
use crate::backend::objstore::ObjectStore;

/// A home with its endpoint served in-process by the current tokio runtime.
pub(crate) struct Fixture {
    pub tmp: tempfile::TempDir,
    pub home: Home,
    pub endpoint: Endpoint,
    pub store: ObjectStore,
}

pub(crate) async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::at(tmp.path().to_path_buf()).unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let keys = Keys::of(&home).unwrap();
    tokio::spawn(serve_on(listener, home.buckets_dir(), Duration::from_secs(3600), keys.clone()));
    let endpoint = Endpoint::at_port(port, &keys);
    let store = ObjectStore::local(&endpoint).without_interrupts();
    Fixture { tmp, home, endpoint, store }
}

fn sidecar(home: &Home, bucket: &str, key: &str, kind: &str) -> PathBuf {
    home.buckets_dir().join(sidecar_name(bucket, key, kind))
}

#[test]
fn env_points_jobs_at_the_endpoint() {
    let keys = Keys { access_key: "AK".into(), secret_key: "SK".into() };
    let env = Endpoint::at_port(4567, &keys).env();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("AWS_ENDPOINT_URL"), Some("http://127.0.0.1:4567"));
    assert_eq!(get("AWS_ENDPOINT_URL_S3"), Some("http://127.0.0.1:4567"));
    assert_eq!(get("AWS_ACCESS_KEY_ID"), Some("AK"));
    assert_eq!(get("AWS_SECRET_ACCESS_KEY"), Some("SK"));
    assert_eq!(get("AWS_DEFAULT_REGION"), Some(REGION));
    assert_eq!(get("AWS_REGION"), Some(REGION));
    assert_eq!(env.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_are_where_s3s_fs_puts_them_and_direct_writes_drop_them() {
    let f = fixture().await;
    f.store.ensure_bucket("alpha").await.unwrap();
    let key = "group/results/job 1/logs/DATASET_NAME:x_STATUS.txt";
    f.store.put("alpha", key, b"old".to_vec()).await.unwrap();
    assert!(sidecar(&f.home, "alpha", key, "internal").exists());
    assert!(sidecar(&f.home, "alpha", key, "metadata").exists());
    // A direct writer rewrites the object at once (same clock tick as the PUT).
    let path = prepare_direct_write(&f.home, "alpha", key).unwrap();
    assert_eq!(path, f.home.buckets_dir().join("alpha").join(key));
    assert!(!sidecar(&f.home, "alpha", key, "internal").exists());
    fs::write(&path, b"new and longer").unwrap();
    assert_eq!(f.store.get("alpha", key).await.unwrap(), b"new and longer");
    // Deleting forgets the sidecars too.
    f.store.put("alpha", "gone.txt", b"x".to_vec()).await.unwrap();
    f.store.client().delete_object().bucket("alpha").key("gone.txt").send().await.unwrap();
    assert!(!sidecar(&f.home, "alpha", "gone.txt", "internal").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_written_directly_are_served_as_they_grow() {
    let f = fixture().await;
    f.store.ensure_bucket("alpha").await.unwrap();
    let path = prepare_direct_write(&f.home, "alpha", "job/logs/stdout").unwrap();
    let mut out = OpenOptions::new().create(true).append(true).open(&path).unwrap();
    out.write_all(b"line 1\n").unwrap();
    assert_eq!(f.store.get("alpha", "job/logs/stdout").await.unwrap(), b"line 1\n");
    assert!(f.store.exists("alpha", "job/logs/stdout").await.unwrap());
    let listed = f.store.list("alpha", "job/").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].key.as_str(), listed[0].size), ("job/logs/stdout", 7));
    out.write_all(b"line 2\n").unwrap();
    assert_eq!(f.store.get("alpha", "job/logs/stdout").await.unwrap(), b"line 1\nline 2\n");
    let head = f.store.client().head_object().bucket("alpha").key("job/logs/stdout").send().await.unwrap();
    assert_eq!(head.content_length(), Some(14));

    // Rewritten behind the server's back after a PUT (without prepare_direct_write): the
    // stale sidecar (stored ETag and CRC) must not be served with the new content.
    f.store.put("alpha", "report.txt", b"first version".to_vec()).await.unwrap();
    let report = f.home.buckets_dir().join("alpha/report.txt");
    fs::write(&report, b"second").unwrap();
    let later = SystemTime::now() + Duration::from_secs(2);
    File::options().write(true).open(&report).unwrap().set_modified(later).unwrap();
    assert_eq!(f.store.get("alpha", "report.txt").await.unwrap(), b"second");

    // A folder is not an object.
    assert!(matches!(f.store.get("alpha", "job/logs").await, Err(BackendError::NotFound { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cannot_leave_their_bucket() {
    let f = fixture().await;
    f.store.ensure_bucket("alpha").await.unwrap();
    f.store.ensure_bucket("bravo").await.unwrap();
    f.store.put("bravo", "secret.txt", b"secret".to_vec()).await.unwrap();
    let buckets = f.home.buckets_dir();
    fs::write(f.tmp.path().join("outside.txt"), b"outside").unwrap();
    let sidecar_key = format!("../{}", sidecar_name("bravo", "secret.txt", "internal"));
    for key in [
        "../bravo/secret.txt",
        "x/../../bravo/secret.txt",
        "../../outside.txt",
        "./a",
        "a/./b",
        sidecar_key.as_str(),
    ] {
        let got = f.store.get("alpha", key).await;
        assert!(got.is_err(), "GET {key} gave {got:?}");
        assert!(f.store.put("alpha", key, b"evil".to_vec()).await.is_err(), "PUT {key}");
        assert!(!f.store.exists("alpha", key).await.unwrap_or(false), "HEAD {key}");
    }
    // A leading slash (`/alpha//etc/passwd` on the wire).
    assert!(f.store.get("alpha", "/etc/passwd").await.is_err());
    assert!(f.store.put("alpha", "/tmp/evil", b"evil".to_vec()).await.is_err());
    assert!(!Path::new("/tmp/evil").exists() || fs::read("/tmp/evil").unwrap() != b"evil");
    assert_eq!(fs::read(buckets.join("bravo/secret.txt")).unwrap(), b"secret");
    assert!(!buckets.join("bravo/evil").exists() && !f.tmp.path().join("evil").exists());
    assert_eq!(fs::read(f.tmp.path().join("outside.txt")).unwrap(), b"outside");
    // Copies and multipart uploads are checked too.
    let copy = f
        .store
        .client()
        .copy_object()
        .bucket("alpha")
        .key("copy.txt")
        .copy_source("alpha/../bravo/secret.txt")
        .send()
        .await;
    assert!(copy.is_err() && !buckets.join("alpha/copy.txt").exists());
    let mpu = f.store.client().create_multipart_upload().bucket("alpha").key("../bravo/mpu").send().await;
    assert!(mpu.is_err());
    // Nothing was written outside `alpha` but what bravo had.
    let bravo: Vec<_> = f.store.list("bravo", "").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(bravo, ["secret.txt"]);
    assert!(f.store.list("alpha", "").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_out_of_a_bucket_are_refused() {
    let f = fixture().await;
    f.store.ensure_bucket("alpha").await.unwrap();
    let buckets = f.home.buckets_dir();
    let outside = f.tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, buckets.join("alpha/dirlink")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), buckets.join("alpha/filelink")).unwrap();
    std::os::unix::fs::symlink(&outside, buckets.join("charlie")).unwrap();
    std::os::unix::fs::symlink("../bravo-gone", buckets.join("alpha/dangling")).unwrap();
    for key in ["dirlink/secret.txt", "filelink"] {
        assert!(f.store.get("alpha", key).await.is_err(), "GET {key}");
    }
    assert!(f.store.put("alpha", "dirlink/new.txt", b"evil".to_vec()).await.is_err());
    assert!(f.store.put("alpha", "dangling/new.txt", b"evil".to_vec()).await.is_err());
    assert!(!outside.join("new.txt").exists());
    assert!(f.store.get("charlie", "secret.txt").await.is_err());
    assert!(f.store.list("charlie", "").await.is_err());
    assert!(f.store.put("charlie", "new.txt", b"evil".to_vec()).await.is_err());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    assert!(prepare_direct_write(&f.home, "alpha", "dirlink/x").is_err());
    assert!(prepare_direct_write(&f.home, "alpha", "../x").is_err());
    assert!(prepare_direct_write(&f.home, "Not_A_Bucket", "x").is_err());
    // A link that stays inside its bucket is fine.
    f.store.put("alpha", "real/data.txt", b"data".to_vec()).await.unwrap();
    std::os::unix::fs::symlink(buckets.join("alpha/real"), buckets.join("alpha/alias")).unwrap();
    assert_eq!(f.store.get("alpha", "alias/data.txt").await.unwrap(), b"data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_too_long_for_sidecar_names_are_stored() {
    let f = fixture().await;
    f.store.ensure_bucket("cianalysispipeline").await.unwrap();
    let key = format!(
        "reviewers/results/job__cianalysispipeline_1700000000/process_results/{}.h5",
        "a_rather_long_output_file_name_".repeat(4)
    );
    assert!(sidecar_too_long("cianalysispipeline", &key, false));
    f.store.put("cianalysispipeline", &key, b"long".to_vec()).await.unwrap();
    assert_eq!(f.store.get("cianalysispipeline", &key).await.unwrap(), b"long");
    let listed = f.store.list("cianalysispipeline", "").await.unwrap();
    assert_eq!(listed.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), [key.as_str()]);
    // Multipart, through the staging name.
    let store = f.store.clone().with_multipart(0, 0);
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 3).map(|i: u32| (i % 251) as u8).collect();
    let local = f.tmp.path().join("big.bin");
    fs::write(&local, &data).unwrap();
    let key2 = format!("{key}.2");
    store.upload_file("cianalysispipeline", &key2, &local, &mut |_, _| {}).await.unwrap();
    assert_eq!(fs::read(f.home.buckets_dir().join("cianalysispipeline").join(&key2)).unwrap(), data);
    let staging: Vec<_> = fs::read_dir(f.home.buckets_dir().join(STAGING)).unwrap().collect();
    assert!(staging.is_empty(), "{staging:?}");
    let leftovers: Vec<_> = fs::read_dir(f.home.buckets_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != STAGING)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Starts a multipart upload of `key` with one part; its upload id.
async fn unfinished_upload(f: &Fixture, key: &str) -> String {
    let c = f.store.client();
    let id = c.create_multipart_upload().bucket("alpha").key(key).send().await.unwrap();
    let id = id.upload_id().unwrap().to_string();
    let part = aws_sdk_s3::primitives::ByteStream::from(vec![7u8; 5 * 1024 * 1024]);
    c.upload_part().bucket("alpha").key(key).upload_id(&id).part_number(1).body(part).send().await.unwrap();
    id
}

fn files_of(f: &Fixture, id: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(f.home.buckets_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| upload_of(n) == Some(id))
        .collect();
    names.sort();
    names
}

/// An upload left by a dead client goes once a newer upload of its key completes; an upload
/// of another key stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_upload_aborts_the_abandoned_uploads_of_its_key() {
    let f = fixture().await;
    f.store.ensure_bucket("alpha").await.unwrap();
    let dead = unfinished_upload(&f, "data/big.bin").await;
    let other = unfinished_upload(&f, "data/other.bin").await;
    assert_eq!(files_of(&f, &dead).len(), 3, "{:?}", files_of(&f, &dead));
    let local = f.tmp.path().join("big.bin");
    fs::write(&local, vec![1u8; 11 * 1024 * 1024]).unwrap();
    let store = f.store.clone().with_multipart(5 * 1024 * 1024, 5 * 1024 * 1024);
    store.upload_file("alpha", "data/big.bin", &local, &mut |_, _| {}).await.unwrap();
    assert_eq!(files_of(&f, &dead), Vec::<String>::new());
    assert_eq!(files_of(&f, &other).len(), 3, "{:?}", files_of(&f, &other));
    // The aborted upload is gone for its client too.
    let late = f
        .store
        .client()
        .upload_part()
        .bucket("alpha")
        .key("data/big.bin")
        .upload_id(&dead)
        .part_number(2)
        .body(aws_sdk_s3::primitives::ByteStream::from(vec![1u8; 10]))
        .send()
        .await;
    assert!(late.is_err(), "{late:?}");
    assert_eq!(files_of(&f, &dead), Vec::<String>::new());
    assert_eq!(fs::read(f.home.buckets_dir().join("alpha/data/big.bin")).unwrap().len(), 11 * 1024 * 1024);
}

/// The lifecycle rule: an upload idle for longer than the bound goes, judged on its newest
/// file; one with a part on its way stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_expire() {
    let f = fixture().await;
    f.store.ensure_bucket("alpha").await.unwrap();
    let old = unfinished_upload(&f, "old.bin").await;
    let recent = unfinished_upload(&f, "recent.bin").await;
    let root = fs::canonicalize(f.home.buckets_dir()).unwrap();
    let age = |id: &str, files: &[String], by: Duration| {
        for name in files {
            let file = File::options().write(true).open(root.join(name)).unwrap();
            file.set_modified(SystemTime::now() - by).unwrap();
        }
        assert!(!files.is_empty(), "{id}");
    };
    age(&old, &files_of(&f, &old), Duration::from_secs(7200));
    // `recent` began long ago, but its part is new.
    age(&recent, &[format!(".upload-{recent}.json")], Duration::from_secs(7200));
    let seen = Arc::new(Uploads::default());
    abort_abandoned_uploads(&root, &seen, ABANDONED_UPLOAD_AFTER);
    assert_eq!(files_of(&f, &old), Vec::<String>::new());
    assert_eq!(files_of(&f, &recent).len(), 3);
    // Idle by its files, but a part is on its way.
    age(&recent, &files_of(&f, &recent), Duration::from_secs(7200));
    let busy = seen.begin(&recent, true);
    let seen_then = Uploads::default();
    abort_abandoned_uploads(&root, &seen, ABANDONED_UPLOAD_AFTER);
    assert_eq!(files_of(&f, &recent).len(), 3);
    drop(busy);
    // What this endpoint saw counts as activity too; without it, the files decide.
    abort_abandoned_uploads(&root, &seen, ABANDONED_UPLOAD_AFTER);
    assert_eq!(files_of(&f, &recent).len(), 3);
    abort_abandoned_uploads(&root, &seen_then, ABANDONED_UPLOAD_AFTER);
    assert_eq!(files_of(&f, &recent), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_when_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let start = Instant::now();
    let keys = Keys { access_key: "AK".into(), secret_key: "SK".into() };
    serve_on(listener, tmp.path().join("buckets"), Duration::from_millis(100), keys).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(100) && start.elapsed() < Duration::from_secs(5));
}

/// `aws s3` (AWS CLI 1.x) and boto3 against the endpoint with nothing but [`Endpoint::env`].
/// Uses `.venv/bin` (awscli and boto3), which the test command `bash tests/run.sh` installs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_and_boto3_work_unchanged() {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin");
    assert!(
        bin.join("aws").is_file(),
        "awscli and boto3 are missing from {}: run the test command `bash tests/run.sh`",
        bin.display()
    );
    let f = fixture().await;
    f.store.ensure_bucket("alpha").await.unwrap();
    let work = f.tmp.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let run = |program: &str, args: &[&str]| {
        let mut cmd = tokio::process::Command::new(bin.join(program));
        cmd.args(args).current_dir(&work).env_remove("AWS_PROFILE").env("HOME", &work);
        cmd.env("AWS_CONFIG_FILE", work.join("none")).env("AWS_SHARED_CREDENTIALS_FILE", work.join("none"));
        cmd.envs(f.endpoint.env());
        let label = format!("{program} {args:?}");
        async move {
            let out = cmd.output().await.unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{label}: {text}{}", String::from_utf8_lossy(&out.stderr));
            text
        }
    };
    let big: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    fs::write(work.join("big.bin"), &big).unwrap();
    fs::write(work.join("small.txt"), b"small").unwrap();
    let job = "group/results/debugjob2026-11-25 13:23:38.123456";
    let status = format!("s3://alpha/{job}/logs/DATASET_NAME:data.txt_STATUS.txt");
    let long = format!("s3://alpha/{job}/process_results/{}.bin", "long_name_".repeat(12));
    run("aws", &["s3", "cp", "small.txt", &status]).await;
    run("aws", &["s3", "cp", "big.bin", "s3://alpha/big.bin"]).await;
    run("aws", &["s3", "cp", "big.bin", &long]).await;
    assert_eq!(f.store.get("alpha", &status["s3://alpha/".len()..]).await.unwrap(), b"small");
    assert_eq!(fs::read(f.home.buckets_dir().join("alpha/big.bin")).unwrap(), big);
    assert_eq!(fs::read(f.home.buckets_dir().join("alpha").join(&long["s3://alpha/".len()..])).unwrap(), big);
    let live = prepare_direct_write(&f.home, "alpha", &format!("{job}/logs/stdout.txt")).unwrap();
    fs::write(&live, b"live output\n").unwrap();
    let listing = run("aws", &["s3", "ls", "--recursive", "s3://alpha/group/"]).await;
    assert!(
        listing.contains("DATASET_NAME:data.txt_STATUS.txt") && listing.contains("stdout.txt"),
        "{listing}"
    );
    let printed = run("aws", &["s3", "cp", &format!("s3://alpha/{job}/logs/stdout.txt"), "-"]).await;
    assert_eq!(printed, "live output\n");
    run("aws", &["s3", "cp", "s3://alpha/big.bin", "big.back"]).await;
    assert_eq!(fs::read(work.join("big.back")).unwrap(), big);
    let script = r#"
import boto3, sys
s3 = boto3.client("s3")
s3.put_object(Bucket="alpha", Key="py/hello.txt", Body=b"hello")
assert s3.get_object(Bucket="alpha", Key="py/hello.txt")["Body"].read() == b"hello"
s3.upload_file("big.bin", "alpha", "py/big.bin")
s3.download_file("alpha", "py/big.bin", "py.back")
assert open("py.back", "rb").read() == open("big.bin", "rb").read()
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="alpha", Prefix="py/")["Contents"]]
assert keys == ["py/big.bin", "py/hello.txt"], keys
try:
    s3.get_object(Bucket="alpha", Key="../bravo/x")
    sys.exit("traversal allowed")
except s3.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
"#;
    let out = run("python3", &["-c", script]).await;
    assert!(out.contains("InvalidArgument"), "{out}");
}

#[test]
fn the_daemon_records_its_address_and_keeps_its_port() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::at(tmp.path().to_path_buf()).unwrap();
    let root = tmp.path().to_path_buf();
    let idle = Duration::from_millis(300);
    let first = std::thread::spawn({
        let root = root.clone();
        move || serve_home(&root, idle).unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ping(&home) {
        assert!(Instant::now() < deadline, "the daemon did not come up");
        std::thread::sleep(POLL);
    }
    let record: Record = read_json(&home.run_dir().join("s3.json")).unwrap();
    assert_eq!(record.pid, std::process::id());
    let port: u16 = fs::read_to_string(home.run_dir().join("s3.port")).unwrap().trim().parse().unwrap();
    assert_eq!(port, record.port);
    assert_eq!(ensure_running(&home).unwrap(), Endpoint::at_port(port, &Keys::of(&home).unwrap()));
    // A second daemon for the same home would leave.
    assert!(take_daemon_lock(&home.run_dir().join("s3d.lock"), Duration::ZERO).unwrap().is_none());
    assert!(ping(&home));
    // Idle: it exits and forgets its record; the next one takes the same port.
    first.join().unwrap();
    assert!(!home.run_dir().join("s3.json").exists());
    let second = std::thread::spawn(move || serve_home(&root, idle).unwrap());
    while !ping(&home) {
        assert!(Instant::now() < deadline, "the second daemon did not come up");
        std::thread::sleep(POLL);
    }
    let again: Record = read_json(&home.run_dir().join("s3.json")).unwrap();
    assert_eq!(again.port, port);
    second.join().unwrap();
}

#[test]
fn ensure_running_reuses_a_live_endpoint_and_ignores_a_stale_record() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::at(tmp.path().to_path_buf()).unwrap();
    let record_path = home.run_dir().join("s3.json");

    // A record whose process is gone: not running; a daemon that fails at once is reported
    // with the log's path.
    write_json(&record_path, &Record { pid: u32::MAX - 1, port: 9, started: 0 }).unwrap();
    assert!(!ping(&home));
    let err = start(&home, Path::new("/bin/false")).unwrap_err().to_string();
    assert!(err.contains("s3.log"), "{err}");
    assert!(!record_path.exists(), "the stale record is gone");

    // A live endpoint (served in-process) is found and reused.
    let listener = runtime.block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(serve_on(listener, home.buckets_dir(), Duration::from_secs(60), Keys::of(&home).unwrap()));
    write_json(&record_path, &Record { pid: std::process::id(), port, started: 0 }).unwrap();
    assert!(ping(&home));
    let endpoint = ensure_running(&home).unwrap();
    assert_eq!(endpoint, Endpoint::at_port(port, &Keys::of(&home).unwrap()));
}
