//! Volume storage and the commit records on a temporary directory.

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use spillway_api::manifest::{MANIFEST_VERSION, Manifest, ManifestSource};
use spillway_api::plan::PLAN_VERSION;
use spillway_api::{
    Compression, Destination, Flavor, Format, JobRef, OutputFile, Plan, ShardMarker, ShardSpec,
    VolumeDestination,
};
use spillway_sink::storage::HashingUpload;
use spillway_sink::storage::volume::VolumeStorage;
use spillway_sink::{SinkError, Storage, commit, open};

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        out.push(e.unwrap().file_name().to_string_lossy().into_owned());
    }
    out.sort();
    out
}

#[tokio::test]
async fn put_get_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = VolumeStorage::open(dir.path()).await.unwrap();
    s.put("job/run/_spillway/plan.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    s.put(
        "job/run/data/dt=2024-03-15/part-000001.csv",
        Bytes::from_static(b"a,b\r\n"),
    )
    .await
    .unwrap();
    s.put("job/runner/x", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(
        s.get("job/run/_spillway/plan.json").await.unwrap().unwrap(),
        Bytes::from_static(b"{}")
    );
    assert_eq!(s.get("job/run/missing").await.unwrap(), None);
    let keys: Vec<(String, u64)> = s
        .list("job/run/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("job/run/_spillway/plan.json".to_string(), 2),
            ("job/run/data/dt=2024-03-15/part-000001.csv".to_string(), 5)
        ]
    );
    // A prefix need not end at a directory boundary.
    assert_eq!(s.list("job/run").await.unwrap().len(), 3);
    assert_eq!(s.list("nothing/here/").await.unwrap().len(), 0);
    s.delete("job/runner/x").await.unwrap();
    s.delete("job/runner/x").await.unwrap();
    assert_eq!(s.list("job/run").await.unwrap().len(), 2);
    // Replacing is atomic and leaves no temporary file behind.
    s.put(
        "job/run/_spillway/plan.json",
        Bytes::from_static(b"{\"v\":2}"),
    )
    .await
    .unwrap();
    assert_eq!(
        files_in(&dir.path().join("job/run/_spillway")),
        ["plan.json"]
    );
}

#[tokio::test]
async fn upload_appears_only_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    let s = VolumeStorage::open(dir.path()).await.unwrap();
    let key = "j/r/data/part-000007.ndjson";
    let mut up = HashingUpload::new(s.begin_upload(key).await.unwrap());
    up.write(Bytes::from_static(b"{\"a\":1}\n")).await.unwrap();
    up.write(Bytes::from_static(b"{\"a\":2}\n")).await.unwrap();
    // Mid-way: nothing under the final name, nothing listed, one hidden temp file.
    assert_eq!(s.get(key).await.unwrap(), None);
    assert!(s.list("j/").await.unwrap().is_empty());
    let names = files_in(&dir.path().join("j/r/data"));
    assert_eq!(names.len(), 1);
    assert!(
        names[0].starts_with(".part-000007.ndjson.tmp-"),
        "{names:?}"
    );
    let done = up.complete().await.unwrap();
    assert_eq!(done.info.size, 16);
    assert_eq!(done.bytes, 16);
    assert_eq!(
        done.digest,
        format!(
            "blake3:{}",
            blake3::hash(b"{\"a\":1}\n{\"a\":2}\n").to_hex()
        )
    );
    assert_eq!(
        s.get(key).await.unwrap().unwrap(),
        Bytes::from_static(b"{\"a\":1}\n{\"a\":2}\n")
    );
    assert_eq!(
        files_in(&dir.path().join("j/r/data")),
        ["part-000007.ndjson"]
    );
}

#[tokio::test]
async fn abort_drop_and_cleanup_remove_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = VolumeStorage::open(dir.path()).await.unwrap();
    let data_dir = dir.path().join("j/r/data");

    let mut up = s.begin_upload("j/r/data/a.csv").await.unwrap();
    up.write(Bytes::from_static(b"x")).await.unwrap();
    up.abort().await.unwrap();
    assert!(files_in(&data_dir).is_empty());

    let mut up = s.begin_upload("j/r/data/b.csv").await.unwrap();
    up.write(Bytes::from_static(b"x")).await.unwrap();
    drop(up);
    assert!(files_in(&data_dir).is_empty());

    // A crashed writer leaves its temp file; cleanup removes it and nothing else.
    s.put("j/r/data/keep.csv", Bytes::from_static(b"k"))
        .await
        .unwrap();
    let mut up = s.begin_upload("j/r/data/c.csv").await.unwrap();
    up.write(Bytes::from_static(b"x")).await.unwrap();
    std::mem::forget(up);
    assert_eq!(files_in(&data_dir).len(), 2);
    assert_eq!(s.abort_incomplete_uploads("j/r/").await.unwrap(), 1);
    assert_eq!(files_in(&data_dir), ["keep.csv"]);
    assert_eq!(s.abort_incomplete_uploads("j/r/").await.unwrap(), 0);
}

#[tokio::test]
async fn put_if_absent_writes_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = VolumeStorage::open(dir.path()).await.unwrap();
    assert!(
        s.put_if_absent("a/plan.json", Bytes::from_static(b"1"))
            .await
            .unwrap()
    );
    assert!(
        !s.put_if_absent("a/plan.json", Bytes::from_static(b"2"))
            .await
            .unwrap()
    );
    assert_eq!(
        s.get("a/plan.json").await.unwrap().unwrap(),
        Bytes::from_static(b"1")
    );
    assert_eq!(files_in(&dir.path().join("a")), ["plan.json"]);
}

#[tokio::test]
async fn rejects_keys_that_escape_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let s = VolumeStorage::open(dir.path()).await.unwrap();
    for key in ["../x", "/etc/passwd", "a//b", "a/./b", "", "a/../../b"] {
        let err = s.put(key, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(matches!(err, SinkError::InvalidKey { .. }), "{key}: {err}");
    }
}

#[tokio::test]
async fn missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = VolumeStorage::open(file.join("sub")).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SinkError::MissingDirectory { .. }), "{text}");
    assert!(
        text.contains("a-file/sub") && text.contains("mount the volume"),
        "{text}"
    );
}

#[test]
fn no_space_left_says_the_disk_is_full() {
    // ENOSPC as the kernel reports it.
    let err = std::io::Error::from_raw_os_error(28);
    let e = spillway_sink::SinkError::from_io("write", "/data/out/.x.tmp-1", err);
    let text = e.to_string();
    assert!(matches!(e, SinkError::DiskFull { .. }), "{text}");
    assert!(
        text.contains("full") && text.contains("/data/out/.x.tmp-1"),
        "{text}"
    );
}

fn job() -> JobRef {
    JobRef {
        namespace: Some("prod".into()),
        name: "logs".into(),
        uid: "u-1".into(),
    }
}

fn marker(id: &str) -> ShardMarker {
    ShardMarker {
        shard_id: id.into(),
        docs: 10,
        expected_docs: 10,
        bytes: 100,
        files: vec![OutputFile {
            key: format!("data/part-{id}.parquet"),
            rows: 10,
            bytes: 100,
            digest: format!("blake3:{}", "00".repeat(32)),
        }],
        attempt: 1,
        completed_at: Utc.with_ymd_and_hms(2024, 3, 15, 7, 0, 0).unwrap(),
    }
}

#[tokio::test]
async fn commit_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let dest = Destination {
        s3: None,
        volume: Some(VolumeDestination {
            path: dir.path().display().to_string(),
        }),
    };
    let storage = open(&dest, None).await.unwrap();
    let s = storage.as_ref();
    assert_eq!(s.describe(), dir.path().display().to_string());
    let run = spillway_api::layout::run_dir("", "logs", "run-1");

    assert_eq!(commit::read_plan(s, &run).await.unwrap(), None);
    let plan = Plan {
        version: PLAN_VERSION,
        job: job(),
        run_id: "run-1".into(),
        created_at: Utc.with_ymd_and_hms(2024, 3, 15, 6, 0, 0).unwrap(),
        time_field: Some("@timestamp".into()),
        expected_docs: 30,
        shards: vec![ShardSpec {
            id: ShardSpec::id_for(1),
            window: None,
            slice: None,
            estimated_docs: 30,
            partition: None,
            index: None,
        }],
    };
    commit::write_plan(s, &run, &plan).await.unwrap();
    assert_eq!(commit::read_plan(s, &run).await.unwrap(), Some(plan));

    for id in ["000002", "000000", "000001"] {
        commit::write_marker(s, &run, &marker(id)).await.unwrap();
    }
    // Rewriting a marker (a re-delivered shard) is harmless.
    commit::write_marker(s, &run, &marker("000001"))
        .await
        .unwrap();
    let markers = commit::read_markers(s, &run).await.unwrap();
    assert_eq!(
        markers
            .iter()
            .map(|m| m.shard_id.as_str())
            .collect::<Vec<_>>(),
        ["000000", "000001", "000002"]
    );
    assert_eq!(markers[1], marker("000001"));
    let raw = std::fs::read_to_string(dir.path().join("logs/run-1/_spillway/shards/000001.json"))
        .unwrap();
    assert!(
        raw.contains("\n  \"shardId\": \"000001\""),
        "pretty JSON: {raw}"
    );

    assert!(!commit::is_successful(s, &run).await.unwrap());
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        job: job(),
        run_id: "run-1".into(),
        format: Format::Parquet,
        compression: Compression::Zstd,
        source: ManifestSource {
            url: "https://search:9200".into(),
            indices: vec!["logs-*".into()],
            flavor: Flavor::Opensearch,
            version: "2.19.0".into(),
        },
        started_at: Utc.with_ymd_and_hms(2024, 3, 15, 6, 0, 0).unwrap(),
        completed_at: Utc.with_ymd_and_hms(2024, 3, 15, 7, 0, 0).unwrap(),
        shards: 3,
        expected_documents: 30,
        documents: 30,
        bytes: 300,
        files: markers.iter().flat_map(|m| m.files.clone()).collect(),
        schema: vec![],
    };
    commit::write_manifest(s, &run, &manifest).await.unwrap();
    commit::write_success(s, &run).await.unwrap();
    assert_eq!(
        commit::read_manifest(s, &run).await.unwrap(),
        Some(manifest)
    );
    assert!(commit::is_successful(s, &run).await.unwrap());
    assert!(dir.path().join("logs/run-1/_SUCCESS").exists());
    assert!(dir.path().join("logs/run-1/_manifest.json").exists());
}

#[tokio::test]
async fn file_writer_streams_an_encoder_into_storage() {
    use spillway_api::{DocRef, OutputSpec, PartitionBy};
    use spillway_sink::{DocSchema, FileWriter, encoder_for};
    let dir = tempfile::tempdir().unwrap();
    let s = VolumeStorage::open(dir.path()).await.unwrap();
    let output = OutputSpec {
        format: Format::Ndjson,
        compression: Compression::None,
        destination: Destination {
            s3: None,
            volume: Some(VolumeDestination {
                path: dir.path().display().to_string(),
            }),
        },
        partition_by: PartitionBy::None,
        include_metadata: false,
        row_group_bytes: 1 << 20,
        part_size_bytes: 8 << 20,
    };
    let enc = encoder_for(&output, &DocSchema::default()).unwrap();
    let mut w = FileWriter::create(&s, "job/run", "data/part-000001.ndjson", enc)
        .await
        .unwrap();
    let docs = [
        DocRef {
            index: "i",
            id: "1",
            source: r#"{"a":1}"#,
        },
        DocRef {
            index: "i",
            id: "2",
            source: r#"{"a":2}"#,
        },
    ];
    w.write_page(&docs).await.unwrap();
    w.write_page(&docs[..1]).await.unwrap();
    assert_eq!(w.rows(), 3);
    assert_eq!(
        s.get("job/run/data/part-000001.ndjson").await.unwrap(),
        None
    );
    let done = w.finish().await.unwrap();
    let want = b"{\"a\":1}\n{\"a\":2}\n{\"a\":1}\n";
    assert_eq!(done.file.key, "data/part-000001.ndjson");
    assert_eq!(done.file.rows, 3);
    assert_eq!(done.file.bytes, want.len() as u64);
    assert_eq!(
        done.file.digest,
        format!("blake3:{}", blake3::hash(want).to_hex())
    );
    assert_eq!(
        s.get("job/run/data/part-000001.ndjson")
            .await
            .unwrap()
            .unwrap(),
        Bytes::from_static(want)
    );
}
