//! The RabbitMQ queue against a real broker (`scripts/services/rabbitmq.sh start`, then
//! `SPILLWAY_TEST_AMQP`). Each test uses its own namespace and results queue names, so tests
//! run in parallel on one broker. The broker-restart test takes an exclusive lock on
//! `$TMPDIR/spillway-rabbitmq-test.lock` and every other test a shared one, so no test sees
//! the restart it did not ask for.

use std::fs::File;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ErrorKind};
use spillway_api::*;
use spillway_queue::rabbit::{QueueNames, RabbitConfig, RabbitQueue, task_queue_arguments};
use spillway_queue::{Consumer, QueueError, ShardQueue};

/// The broker URL, or `None` (after saying why) when there is none and this is not CI.
fn broker() -> Option<String> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spillway_queue=info".into()),
        )
        .with_test_writer()
        .try_init();
    match std::env::var("SPILLWAY_TEST_AMQP") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "SPILLWAY_TEST_AMQP is not set but CI is: start a broker with \
             `scripts/services/rabbitmq.sh start` and `eval \"$(scripts/services/rabbitmq.sh env)\"`"
        ),
        _ => {
            eprintln!(
                "skipping: SPILLWAY_TEST_AMQP is not set (scripts/services/rabbitmq.sh start; \
                 eval \"$(scripts/services/rabbitmq.sh env)\")"
            );
            None
        }
    }
}

/// Shared (normal tests) or exclusive (broker restart) hold on the broker.
fn broker_lock(exclusive: bool) -> File {
    let path = std::env::temp_dir().join("spillway-rabbitmq-test.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    if exclusive {
        f.lock().expect("exclusive broker lock");
    } else {
        f.lock_shared().expect("shared broker lock");
    }
    f
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

fn config(url: &str, ns: &str, delivery_limit: u32) -> RabbitConfig {
    RabbitConfig {
        url: url.to_string(),
        delivery_limit,
        namespace: Some(ns.to_string()),
        connect_timeout: Duration::from_secs(10),
        ..RabbitConfig::default()
    }
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `secs`.
async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// Asserts that `consumer` hands out nothing within a short while.
async fn assert_idle<T: std::fmt::Debug>(consumer: &mut Box<dyn Consumer<T>>, what: &str) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(400), consumer.next()).await {
        panic!("{what}: expected no delivery, got {got:?}");
    }
}

fn task(id: &str, reply_to: &str) -> ShardTask {
    let job: ExportJob = load_job_yaml(
        "apiVersion: spillway.dev/v1alpha1\nkind: ExportJob\nmetadata: {name: t}\nspec:\n  source: {url: 'http://h:9200', indices: [a]}\n  output: {destination: {volume: {path: /tmp/x}}}\n",
    )
    .unwrap();
    ShardTask {
        version: MESSAGE_VERSION,
        job: JobRef {
            namespace: None,
            name: "t".into(),
            uid: "u".into(),
        },
        run_id: "r".into(),
        snapshot: SnapshotRef {
            pit_id: "p".into(),
            flavor: Flavor::Opensearch,
            version: "2.19.0".into(),
            generation: 0,
        },
        spec: job.spec,
        shard: ShardSpec {
            id: id.into(),
            window: None,
            slice: None,
            estimated_docs: 1,
            partition: None,
            index: None,
        },
        attempt: 1,
        reply_to: reply_to.into(),
    }
}

fn result(shard: &str) -> ShardResult {
    ShardResult {
        version: MESSAGE_VERSION,
        job: JobRef {
            namespace: None,
            name: "t".into(),
            uid: "u".into(),
        },
        run_id: "r".into(),
        shard_id: shard.into(),
        attempt: 1,
        snapshot_generation: 0,
        outcome: ShardOutcome::DeadLettered {
            reason: "rejected".into(),
        },
    }
}

async fn raw_connection(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("raw AMQP connection")
}

/// Declares `queue` with `args` on a fresh channel: Ok when they match what exists.
async fn redeclare(
    conn: &Connection,
    queue: &str,
    durable: bool,
    args: FieldTable,
) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .map(|_| ())
}

/// Closes `q` and deletes its namespace's queues and exchange, so that repeated runs do not
/// pile up quorum queues on the shared broker.
async fn finish(url: &str, q: RabbitQueue) {
    let names = q.names().clone();
    q.close().await;
    let conn = raw_connection(url).await;
    let ch = conn.create_channel().await.unwrap();
    for queue in [&names.shards, &names.dead] {
        ch.queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap_or_else(|e| panic!("delete {queue}: {e}"));
    }
    ch.exchange_delete(names.dead_exchange.as_str().into(), Default::default())
        .await
        .unwrap_or_else(|e| panic!("delete {}: {e}", names.dead_exchange));
    let _ = conn.close(200, "OK".into()).await;
}

fn precondition_failed(r: Result<(), lapin::Error>) -> bool {
    match r {
        Err(e) => matches!(e.kind(), ErrorKind::ProtocolError(p)
            if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))),
        Ok(()) => false,
    }
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_has_quorum_queues_delivery_limit_and_dead_lettering() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let ns = unique();
    let cfg = config(&url, &ns, 7);
    let q = within(20, "connect", RabbitQueue::connect(cfg.clone()))
        .await
        .unwrap();
    let names = QueueNames::new(Some(&ns));
    assert_eq!(q.names(), &names);
    assert!(q.is_connected());
    // Connecting again re-declares the same topology without error (idempotent).
    let again = within(20, "second connect", RabbitQueue::connect(cfg.clone()))
        .await
        .unwrap();
    again.close().await;

    let conn = raw_connection(&url).await;
    let quorum = || table(&[("x-queue-type", AMQPValue::LongString("quorum".into()))]);
    // The exact arguments are accepted again; any other type, limit or DLX is refused.
    redeclare(
        &conn,
        &names.shards,
        true,
        task_queue_arguments(&cfg, &names),
    )
    .await
    .expect("task queue has exactly the declared arguments");
    let mut classic = task_queue_arguments(&cfg, &names);
    classic.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    assert!(precondition_failed(
        redeclare(&conn, &names.shards, true, classic).await
    ));
    let mut other_limit = task_queue_arguments(&cfg, &names);
    other_limit.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(99));
    assert!(precondition_failed(
        redeclare(&conn, &names.shards, true, other_limit).await
    ));
    let mut other_dlx = task_queue_arguments(&cfg, &names);
    other_dlx.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("elsewhere".into()),
    );
    assert!(precondition_failed(
        redeclare(&conn, &names.shards, true, other_dlx).await
    ));
    assert!(precondition_failed(
        redeclare(
            &conn,
            &names.shards,
            false,
            task_queue_arguments(&cfg, &names)
        )
        .await
    ));
    match task_queue_arguments(&cfg, &names)
        .inner()
        .get("x-delivery-limit")
    {
        Some(AMQPValue::LongLongInt(n)) => assert_eq!(*n, 6, "7 deliveries = 6 returns"),
        other => panic!("x-delivery-limit is {other:?}"),
    }
    // The dead-letter queue is a durable quorum queue fed by the dead-letter exchange.
    redeclare(&conn, &names.dead, true, quorum())
        .await
        .expect("dead queue is a durable quorum queue");
    assert!(precondition_failed(
        redeclare(&conn, &names.dead, true, FieldTable::default()).await
    ));
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        names.dead_exchange.as_str().into(),
        "any-key".into(),
        BasicPublishOptions::default(),
        &serde_json::to_vec(&task("000001", "x")).unwrap(),
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let depths = within(10, "queue depths", q.queue_depths()).await.unwrap();
    assert_eq!(depths, (0, 1), "the dead exchange routes to the dead queue");

    // A results queue is a durable quorum queue with x-expires = results_ttl.
    let results = format!("spillway.results.{ns}.run");
    let _c = q.consume_results(&results).await.unwrap();
    let ttl = cfg.results_ttl.as_millis() as i64;
    redeclare(
        &conn,
        &results,
        true,
        table(&[
            ("x-queue-type", AMQPValue::LongString("quorum".into())),
            ("x-expires", AMQPValue::LongLongInt(ttl)),
        ]),
    )
    .await
    .expect("results queue has the declared arguments");
    assert!(precondition_failed(
        redeclare(
            &conn,
            &results,
            true,
            table(&[
                ("x-queue-type", AMQPValue::LongString("quorum".into())),
                ("x-expires", AMQPValue::LongLongInt(ttl + 1)),
            ]),
        )
        .await
    ));
    q.delete_results(&results).await.unwrap();
    let _ = conn.close(200, "OK".into()).await;
    let handle = q.clone();
    finish(&url, q).await;
    assert!(!handle.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_consume_ack_and_prefetch() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let q = RabbitQueue::connect(config(&url, &unique(), 5))
        .await
        .unwrap();
    for i in 0..3 {
        within(
            10,
            "publish",
            q.publish_task(&task(&format!("{i:06}"), "r")),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        q.queue_depths().await.unwrap(),
        (3, 0),
        "confirmed = queued"
    );
    let mut c = q.consume_tasks(2).await.unwrap();
    let a = within(10, "first", c.next()).await.unwrap().unwrap();
    assert_eq!(a.message.shard.id, "000000");
    assert_eq!(a.delivery_count, 1);
    assert_eq!(a.dead_letter_reason, None);
    let b = within(10, "second", c.next()).await.unwrap().unwrap();
    assert_eq!(b.message.shard.id, "000001");
    assert_idle(&mut c, "prefetch 2 with two unanswered").await;
    a.ack().await.unwrap();
    let third = within(10, "third after an ack", c.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.message.shard.id, "000002");
    b.ack().await.unwrap();
    third.ack().await.unwrap();
    // Acked messages are gone for good: nothing ready, nothing for a new consumer.
    drop(c);
    let mut fresh = q.consume_tasks(5).await.unwrap();
    assert_idle(&mut fresh, "after every ack").await;
    assert_eq!(q.queue_depths().await.unwrap(), (0, 0));
    finish(&url, q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_counts_deliveries_until_the_limit_dead_letters() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let q = RabbitQueue::connect(config(&url, &unique(), 3))
        .await
        .unwrap();
    q.publish_task(&task("000007", "r")).await.unwrap();
    let mut c = q.consume_tasks(1).await.unwrap();
    for expected in 1..=3 {
        let d = within(10, "redelivery", c.next()).await.unwrap().unwrap();
        assert_eq!(d.message.shard.id, "000007");
        assert_eq!(d.delivery_count, expected);
        d.requeue().await.unwrap();
    }
    // Third return with delivery_limit 3: dead-lettered, not delivered a fourth time.
    let mut dead = q.consume_dead_tasks().await.unwrap();
    let d = within(10, "dead letter", dead.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.message.shard.id, "000007");
    assert_eq!(d.dead_letter_reason.as_deref(), Some("delivery_limit"));
    d.ack().await.unwrap();
    assert_idle(&mut c, "a dead-lettered task").await;
    assert_eq!(q.queue_depths().await.unwrap(), (0, 0));
    finish(&url, q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_limit_one_dead_letters_on_the_first_return() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let q = RabbitQueue::connect(config(&url, &unique(), 1))
        .await
        .unwrap();
    q.publish_task(&task("000005", "r")).await.unwrap();
    let mut c = q.consume_tasks(1).await.unwrap();
    let d = within(10, "only delivery", c.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.delivery_count, 1);
    d.requeue().await.unwrap();
    let mut dead = q.consume_dead_tasks().await.unwrap();
    let d = within(10, "dead letter", dead.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.message.shard.id, "000005");
    assert_eq!(d.dead_letter_reason.as_deref(), Some("delivery_limit"));
    d.ack().await.unwrap();
    assert_idle(&mut c, "a task past its single delivery").await;
    finish(&url, q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_task_is_dead_lettered_as_rejected() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let q = RabbitQueue::connect(config(&url, &unique(), 5))
        .await
        .unwrap();
    q.publish_task(&task("000009", "r")).await.unwrap();
    let mut c = q.consume_tasks(1).await.unwrap();
    let d = within(10, "task", c.next()).await.unwrap().unwrap();
    d.reject().await.unwrap();
    let mut dead = q.consume_dead_tasks().await.unwrap();
    let d = within(10, "dead letter", dead.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.message.shard.id, "000009");
    assert_eq!(d.dead_letter_reason.as_deref(), Some("rejected"));
    // A dead letter given back stays in the dead queue (the forwarder retries it later).
    d.requeue().await.unwrap();
    let again = within(10, "requeued dead letter", dead.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.message.shard.id, "000009");
    assert_eq!(again.delivery_count, 2);
    again.ack().await.unwrap();
    finish(&url, q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_delivery_comes_back_then_dead_letters() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let q = RabbitQueue::connect(config(&url, &unique(), 2))
        .await
        .unwrap();
    q.publish_task(&task("000001", "r")).await.unwrap();
    let mut c = q.consume_tasks(1).await.unwrap();
    let d1 = within(10, "first", c.next()).await.unwrap().unwrap();
    assert_eq!(d1.delivery_count, 1);
    drop(d1); // a crashed worker task; the consumer (and its channel) stay
    let d2 = within(10, "dropped delivery back", c.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d2.message.shard.id, "000001");
    assert_eq!(d2.delivery_count, 2);
    drop(d2); // second crash: limit reached
    let mut dead = q.consume_dead_tasks().await.unwrap();
    let d = within(10, "dead letter", dead.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.dead_letter_reason.as_deref(), Some("delivery_limit"));
    d.ack().await.unwrap();
    finish(&url, q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_dropped_with_deliveries_gives_them_back() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let q = RabbitQueue::connect(config(&url, &unique(), 5))
        .await
        .unwrap();
    q.publish_task(&task("000003", "r")).await.unwrap();
    {
        let mut c = q.consume_tasks(1).await.unwrap();
        let d = within(10, "first", c.next()).await.unwrap().unwrap();
        drop(c);
        drop(d);
    }
    let mut c = q.consume_tasks(1).await.unwrap();
    let d = within(10, "after the consumer went away", c.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.message.shard.id, "000003");
    assert_eq!(d.delivery_count, 2);
    d.ack().await.unwrap();
    finish(&url, q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_task_is_dead_lettered_and_reported() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let ns = unique();
    let q = RabbitQueue::connect(config(&url, &ns, 5)).await.unwrap();
    let conn = raw_connection(&url).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        "".into(),
        q.names().shards.as_str().into(),
        BasicPublishOptions::default(),
        b"{not json",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let mut c = q.consume_tasks(1).await.unwrap();
    match within(10, "bad message", c.next()).await {
        Some(Err(QueueError::Decode { queue, .. })) => assert_eq!(queue, q.names().shards),
        other => panic!("expected a decode error, got {other:?}"),
    }
    let mut dead_raw = q.consume_dead_tasks().await.unwrap();
    // The dead queue's consumer cannot decode it either: reported, and dropped for good.
    match within(10, "bad dead letter", dead_raw.next()).await {
        Some(Err(QueueError::Decode { .. })) => {}
        other => panic!("expected a decode error from the dead queue, got {other:?}"),
    }
    assert_eq!(q.queue_depths().await.unwrap(), (0, 0));
    let _ = conn.close(200, "OK".into()).await;
    finish(&url, q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_go_only_to_the_named_queue_and_deleted_queues_drop_them() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let q = RabbitQueue::connect(config(&url, &unique(), 5))
        .await
        .unwrap();
    let run_a = format!("spillway.results.{}.a", unique());
    let run_b = format!("spillway.results.{}.b", unique());
    let mut a = q.consume_results(&run_a).await.unwrap();
    let mut b = q.consume_results(&run_b).await.unwrap();
    q.publish_result(&run_a, &result("000001")).await.unwrap();
    q.publish_result(&run_b, &result("000002")).await.unwrap();
    let got_a = within(10, "result a", a.next()).await.unwrap().unwrap();
    assert_eq!(got_a.message.shard_id, "000001");
    assert_eq!(got_a.delivery_count, 1);
    got_a.ack().await.unwrap();
    let got_b = within(10, "result b", b.next()).await.unwrap().unwrap();
    assert_eq!(got_b.message.shard_id, "000002");
    got_b.ack().await.unwrap();
    assert_idle(&mut a, "run a sees only its own result").await;

    // Run b is over: its queue goes, its consumer ends, late results vanish without error.
    q.delete_results(&run_b).await.unwrap();
    let end = within(10, "consumer of a deleted queue ends", b.next()).await;
    assert!(end.is_none(), "expected the end of the stream, got {end:?}");
    within(
        10,
        "publish to a deleted queue",
        q.publish_result(&run_b, &result("000003")),
    )
    .await
    .expect("a result for a finished run is dropped, not an error");
    assert!(
        q.queue_depth(&run_b).await.is_err(),
        "publishing must not re-create a deleted results queue"
    );
    assert_idle(&mut a, "run a after b's late result").await;
    // Deleting again is fine (idempotent).
    q.delete_results(&run_b).await.unwrap();
    q.delete_results(&run_a).await.unwrap();
    finish(&url, q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_published_before_the_first_next_are_kept() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let q = RabbitQueue::connect(config(&url, &unique(), 5))
        .await
        .unwrap();
    let run = format!("spillway.results.{}.r", unique());
    let mut c = q.consume_results(&run).await.unwrap();
    q.publish_result(&run, &result("000004")).await.unwrap();
    assert_eq!(q.queue_depth(&run).await.unwrap(), 1);
    let got = within(10, "result", c.next()).await.unwrap().unwrap();
    assert_eq!(got.message.shard_id, "000004");
    got.ack().await.unwrap();
    q.delete_results(&run).await.unwrap();
    finish(&url, q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_refuses_is_an_error() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let q = RabbitQueue::connect(config(&url, &unique(), 5))
        .await
        .unwrap();
    // A full queue that refuses new messages: the broker answers the publish with a nack.
    let full = format!("spillway.results.{}.full", unique());
    let conn = raw_connection(&url).await;
    redeclare(
        &conn,
        &full,
        true,
        table(&[
            ("x-queue-type", AMQPValue::LongString("classic".into())),
            ("x-max-length", AMQPValue::LongLongInt(1)),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]),
    )
    .await
    .unwrap();
    within(
        10,
        "publish to a queue with room",
        q.publish_result(&full, &result("000000")),
    )
    .await
    .unwrap();
    let err = within(
        10,
        "refused publish",
        q.publish_result(&full, &result("000001")),
    )
    .await
    .expect_err("a nacked publish must fail");
    assert!(
        matches!(&err, QueueError::Broker { queue, reason } if queue == &full && reason.contains("nack")),
        "{err}"
    );
    q.delete_results(&full).await.unwrap();
    let _ = conn.close(200, "OK".into()).await;
    finish(&url, q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_consumers_and_refuses_publishes() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    let q = RabbitQueue::connect(config(&url, &unique(), 5))
        .await
        .unwrap();
    let mut tasks = q.consume_tasks(1).await.unwrap();
    let waiting = tokio::spawn(async move { tasks.next().await.map(|r| r.is_ok()) });
    // A consumer already subscribed and one that never called next() both end.
    let run = format!("spillway.results.{}.r", unique());
    let mut results = q.consume_results(&run).await.unwrap();
    q.delete_results(&run).await.unwrap();
    q.close().await;
    let ended = within(10, "waiting consumer ends on close", waiting)
        .await
        .unwrap();
    assert_eq!(ended, None);
    assert!(within(10, "idle consumer", results.next()).await.is_none());
    assert!(matches!(
        q.publish_task(&task("000001", "r")).await,
        Err(QueueError::Closed)
    ));
    assert!(!q.is_connected());
    finish(&url, q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_name_the_broker_without_the_password() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(false);
    // Nothing listens on port 1.
    let cfg = RabbitConfig {
        url: "amqp://spillway:hunter2@127.0.0.1:1/%2f".into(),
        connect_timeout: Duration::from_secs(2),
        ..RabbitConfig::default()
    };
    let err = within(10, "refused connect", RabbitQueue::connect(cfg))
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("amqp://spillway:***@127.0.0.1:1/%2f"), "{err}");
    assert!(err.contains("check that RabbitMQ is running"), "{err}");

    // Wrong credentials on the real broker: refused at once, not retried until the timeout.
    let wrong = match url.split_once('@') {
        Some((_, host)) => format!("amqp://guest:wrong-secret@{host}"),
        None => panic!("SPILLWAY_TEST_AMQP has no credentials: {url}"),
    };
    let cfg = RabbitConfig {
        url: wrong,
        connect_timeout: Duration::from_secs(30),
        ..RabbitConfig::default()
    };
    let started = std::time::Instant::now();
    let err = within(20, "refused login", RabbitQueue::connect(cfg))
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("wrong-secret"), "{err}");
    assert!(err.contains("guest:***@"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a refused login must not be retried until connect_timeout ({:?})",
        started.elapsed()
    );
}

fn service_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services/rabbitmq.sh")
}

/// Runs `scripts/services/rabbitmq.sh <action>` (restart really stops and starts the node).
async fn service(action: &str) {
    let script = service_script();
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(action)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {} restart: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {action} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_consumers_resume_and_confirmed_messages_survive() {
    let Some(url) = broker() else { return };
    let _lock = broker_lock(true);
    let q = RabbitQueue::connect(config(&url, &unique(), 5))
        .await
        .unwrap();
    let run = format!("spillway.results.{}.r", unique());
    // Confirmed before the restart: one task left in the queue, one held by a worker.
    q.publish_task(&task("000001", &run)).await.unwrap();
    q.publish_task(&task("000002", &run)).await.unwrap();
    let mut worker = q.consume_tasks(1).await.unwrap();
    let held = within(10, "held task", worker.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.message.shard.id, "000001");
    // A coordinator waiting for results across the restart.
    let mut results = q.consume_results(&run).await.unwrap();
    let waiting = tokio::spawn(async move {
        let d = results.next().await;
        (d.map(|r| r.map(|d| d.message.shard_id.clone())), results)
    });

    within(120, "broker restart", service("restart")).await;

    // The held delivery belongs to the dead connection: its ack fails, the broker keeps it.
    let ack = held.ack().await;
    assert!(
        matches!(ack, Err(QueueError::Broker { .. })),
        "ack on a dead channel: {ack:?}"
    );
    // Published after the restart (waits for the reconnect), received by the waiting consumer.
    within(
        90,
        "publish after restart",
        q.publish_result(&run, &result("000099")),
    )
    .await
    .unwrap();
    let (got, _results) = within(60, "waiting consumer resumes", waiting)
        .await
        .unwrap();
    assert_eq!(got.unwrap().unwrap(), "000099");
    assert!(q.is_connected());
    // Both tasks survived the restart (durable quorum queue, persistent messages); the worker's
    // consumer resubscribed by itself.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let d = within(60, "task after restart", worker.next())
            .await
            .unwrap()
            .unwrap();
        seen.push(d.message.shard.id.clone());
        d.ack().await.unwrap();
    }
    seen.sort();
    assert_eq!(seen, ["000001", "000002"]);
    assert_eq!(q.queue_depths().await.unwrap(), (0, 0));

    // While the broker is down a publish waits only `publish_timeout`, then fails.
    let impatient = RabbitQueue::connect(RabbitConfig {
        publish_timeout: Duration::from_secs(2),
        ..config(&url, &unique(), 5)
    })
    .await
    .unwrap();
    within(60, "broker stop", service("stop")).await;
    let started = std::time::Instant::now();
    let err = within(
        20,
        "publish during an outage",
        impatient.publish_task(&task("000003", &run)),
    )
    .await
    .expect_err("no broker: the publish must fail after publish_timeout");
    assert!(matches!(err, QueueError::Broker { .. }), "{err}");
    assert!(
        err.to_string().contains("did not come back in time"),
        "{err}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!impatient.is_connected());
    within(120, "broker start", service("start")).await;
    within(
        60,
        "publish after the outage",
        q.publish_task(&task("000004", &run)),
    )
    .await
    .unwrap();
    let d = within(60, "task after the outage", worker.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.message.shard.id, "000004");
    d.ack().await.unwrap();
    q.delete_results(&run).await.unwrap();
    finish(&url, impatient).await;
    finish(&url, q).await;
}
