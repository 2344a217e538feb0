//! An in-process queue with broker semantics: prefetch limits, acks, requeue on drop,
//! delivery counts and a dead-letter channel. Used by `spillway run` and by tests.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use spillway_api::{ShardResult, ShardTask};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::{Acker, Consumer, Delivery, QueueError, ShardQueue, decode, encode};

struct Message {
    bytes: Arc<Vec<u8>>,
    deliveries: u32,
    /// Set on messages in a dead-letter channel.
    dead_reason: Option<&'static str>,
}

impl Message {
    fn new(bytes: Vec<u8>) -> Self {
        Message {
            bytes: Arc::new(bytes),
            deliveries: 0,
            dead_reason: None,
        }
    }
}

struct Channel {
    name: String,
    ready: Mutex<VecDeque<Message>>,
    closed: Mutex<bool>,
    notify: Notify,
    /// Deliveries after which a returned message is dead-lettered instead of requeued.
    max_deliveries: Option<u32>,
    dead: Option<Arc<Channel>>,
}

impl Channel {
    fn new(name: &str, max_deliveries: Option<u32>, dead: Option<Arc<Channel>>) -> Arc<Self> {
        Arc::new(Channel {
            name: name.to_string(),
            ready: Mutex::new(VecDeque::new()),
            closed: Mutex::new(false),
            notify: Notify::new(),
            max_deliveries,
            dead,
        })
    }

    fn push(&self, msg: Message) {
        self.ready.lock().push_back(msg);
        self.notify.notify_one();
    }

    /// A message came back unanswered or was requeued.
    fn give_back(&self, msg: Message) {
        match (&self.dead, self.max_deliveries) {
            (Some(dead), Some(max)) if msg.deliveries >= max => dead.push(Message {
                bytes: msg.bytes,
                deliveries: 0,
                dead_reason: Some("delivery_limit"),
            }),
            _ => {
                self.ready.lock().push_front(msg);
                self.notify.notify_one();
            }
        }
    }

    fn depth(&self) -> usize {
        self.ready.lock().len()
    }
}

/// In-memory [`ShardQueue`].
#[derive(Clone)]
pub struct MemoryQueue {
    tasks: Arc<Channel>,
    results: Arc<Mutex<HashMap<String, Arc<Channel>>>>,
    dead: Arc<Channel>,
}

impl MemoryQueue {
    /// `max_deliveries`: a task delivered this many times without an ack is dead-lettered.
    pub fn new(max_deliveries: u32) -> Self {
        let dead = Channel::new("spillway.shards.dead", None, None);
        MemoryQueue {
            tasks: Channel::new(
                "spillway.shards",
                Some(max_deliveries.max(1)),
                Some(dead.clone()),
            ),
            results: Arc::new(Mutex::new(HashMap::new())),
            dead,
        }
    }

    /// Ends every consumer once its queue is drained of ready messages.
    pub fn close(&self) {
        let results: Vec<Arc<Channel>> = self.results.lock().values().cloned().collect();
        for ch in [&self.tasks, &self.dead].into_iter().chain(results.iter()) {
            *ch.closed.lock() = true;
            ch.notify.notify_waiters();
        }
    }

    fn results_channel(&self, name: &str) -> Arc<Channel> {
        self.results
            .lock()
            .entry(name.to_string())
            .or_insert_with(|| Channel::new(name, None, None))
            .clone()
    }

    /// Ready (undelivered) tasks.
    pub fn task_depth(&self) -> usize {
        self.tasks.depth()
    }
}

struct MemoryAcker {
    channel: Arc<Channel>,
    msg: Option<Message>,
    _permit: Option<OwnedSemaphorePermit>,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        self.msg.take();
        Ok(())
    }
    async fn requeue(mut self: Box<Self>) -> Result<(), QueueError> {
        if let Some(m) = self.msg.take() {
            self.channel.give_back(m);
        }
        Ok(())
    }
    async fn reject(mut self: Box<Self>) -> Result<(), QueueError> {
        if let (Some(m), Some(dead)) = (self.msg.take(), &self.channel.dead) {
            dead.push(Message {
                bytes: m.bytes,
                deliveries: 0,
                dead_reason: Some("rejected"),
            });
        }
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // Dropped without an answer: like a consumer whose connection died.
        if let Some(m) = self.msg.take() {
            self.channel.give_back(m);
        }
    }
}

struct MemoryConsumer<T> {
    channel: Arc<Channel>,
    permits: Option<Arc<Semaphore>>,
    _t: PhantomData<fn() -> T>,
}

#[async_trait]
impl<T: DeserializeOwned + Send + 'static> Consumer<T> for MemoryConsumer<T> {
    async fn next(&mut self) -> Option<Result<Delivery<T>, QueueError>> {
        let permit = match &self.permits {
            Some(sem) => Some(sem.clone().acquire_owned().await.ok()?),
            None => None,
        };
        loop {
            let notified = self.channel.notify.notified();
            let popped = self.channel.ready.lock().pop_front();
            if let Some(mut msg) = popped {
                msg.deliveries += 1;
                let count = msg.deliveries;
                let dead_reason = msg.dead_reason;
                let decoded = decode::<T>(&self.channel.name, &msg.bytes);
                let acker = Box::new(MemoryAcker {
                    channel: self.channel.clone(),
                    msg: Some(msg),
                    _permit: permit,
                });
                return Some(match decoded {
                    Ok(m) => {
                        let d = Delivery::new(m, count, acker);
                        Ok(match dead_reason {
                            Some(r) => d.with_dead_letter_reason(r),
                            None => d,
                        })
                    }
                    Err(e) => {
                        // Undecodable messages are dead-lettered, never retried forever.
                        let _ = acker.reject().await;
                        Err(e)
                    }
                });
            }
            if *self.channel.closed.lock() {
                return None;
            }
            notified.await;
        }
    }
}

impl MemoryQueue {
    fn consumer<T>(&self, channel: &Arc<Channel>, prefetch: Option<u16>) -> Box<dyn Consumer<T>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        Box::new(MemoryConsumer {
            channel: channel.clone(),
            permits: prefetch.map(|p| Arc::new(Semaphore::new(p.max(1) as usize))),
            _t: PhantomData,
        })
    }
}

#[async_trait]
impl ShardQueue for MemoryQueue {
    async fn publish_task(&self, task: &ShardTask) -> Result<(), QueueError> {
        if *self.tasks.closed.lock() {
            return Err(QueueError::Closed);
        }
        self.tasks.push(Message::new(encode(task)));
        Ok(())
    }
    async fn consume_tasks(
        &self,
        prefetch: u16,
    ) -> Result<Box<dyn Consumer<ShardTask>>, QueueError> {
        Ok(self.consumer(&self.tasks, Some(prefetch)))
    }
    async fn publish_result(&self, reply_to: &str, result: &ShardResult) -> Result<(), QueueError> {
        let channel = self.results.lock().get(reply_to).cloned();
        if let Some(ch) = channel {
            ch.push(Message::new(encode(result)));
        }
        Ok(())
    }
    async fn consume_results(
        &self,
        name: &str,
    ) -> Result<Box<dyn Consumer<ShardResult>>, QueueError> {
        Ok(self.consumer(&self.results_channel(name), None))
    }
    async fn results_exist(&self, name: &str) -> Result<bool, QueueError> {
        Ok(self.results.lock().contains_key(name))
    }
    async fn delete_results(&self, name: &str) -> Result<(), QueueError> {
        if let Some(ch) = self.results.lock().remove(name) {
            *ch.closed.lock() = true;
            ch.notify.notify_waiters();
        }
        Ok(())
    }
    async fn consume_dead_tasks(&self) -> Result<Box<dyn Consumer<ShardTask>>, QueueError> {
        Ok(self.consumer(&self.dead, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_api::*;

    fn task(id: &str) -> ShardTask {
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
            reply_to: "spillway.results.u.r".into(),
        }
    }

    #[tokio::test]
    async fn dropped_delivery_comes_back_then_dead_letters() {
        let q = MemoryQueue::new(2);
        q.publish_task(&task("000001")).await.unwrap();
        let mut c = q.consume_tasks(1).await.unwrap();
        let d1 = c.next().await.unwrap().unwrap();
        assert_eq!(d1.delivery_count, 1);
        drop(d1); // a crashed worker
        let d2 = c.next().await.unwrap().unwrap();
        assert_eq!(d2.delivery_count, 2);
        drop(d2); // second crash: limit reached
        assert_eq!(q.task_depth(), 0);
        let mut dead = q.consume_dead_tasks().await.unwrap();
        let d = dead.next().await.unwrap().unwrap();
        assert_eq!(d.message.shard.id, "000001");
        assert_eq!(d.dead_letter_reason.as_deref(), Some("delivery_limit"));
    }

    #[tokio::test]
    async fn results_go_to_the_named_queue_only() {
        let q = MemoryQueue::new(3);
        let mut a = q.consume_results("spillway.results.a.r").await.unwrap();
        let mut b = q.consume_results("spillway.results.b.r").await.unwrap();
        let mut res = ShardResult {
            version: MESSAGE_VERSION,
            job: JobRef {
                namespace: None,
                name: "t".into(),
                uid: "a".into(),
            },
            run_id: "r".into(),
            shard_id: "000001".into(),
            attempt: 1,
            snapshot_generation: 0,
            outcome: ShardOutcome::DeadLettered {
                reason: "rejected".into(),
            },
        };
        q.publish_result("spillway.results.a.r", &res)
            .await
            .unwrap();
        res.shard_id = "000002".into();
        q.publish_result("spillway.results.b.r", &res)
            .await
            .unwrap();
        // A run that is over: dropped, not an error.
        assert!(q.results_exist("spillway.results.b.r").await.unwrap());
        q.delete_results("spillway.results.b.r").await.unwrap();
        assert!(!q.results_exist("spillway.results.b.r").await.unwrap());
        q.publish_result("spillway.results.b.r", &res)
            .await
            .unwrap();
        assert_eq!(a.next().await.unwrap().unwrap().message.shard_id, "000001");
        let got_b = b.next().await.unwrap().unwrap();
        assert_eq!(got_b.message.shard_id, "000002");
        assert!(
            b.next().await.is_none(),
            "a deleted queue ends its consumer"
        );
    }

    #[tokio::test]
    async fn rejected_task_is_dead_lettered_with_its_reason() {
        let q = MemoryQueue::new(5);
        q.publish_task(&task("000009")).await.unwrap();
        let mut c = q.consume_tasks(1).await.unwrap();
        c.next().await.unwrap().unwrap().reject().await.unwrap();
        let mut dead = q.consume_dead_tasks().await.unwrap();
        let d = dead.next().await.unwrap().unwrap();
        assert_eq!(d.message.shard.id, "000009");
        assert_eq!(d.dead_letter_reason.as_deref(), Some("rejected"));
    }

    #[tokio::test]
    async fn prefetch_limits_unanswered_deliveries() {
        let q = MemoryQueue::new(5);
        for i in 0..3 {
            q.publish_task(&task(&format!("{i:06}"))).await.unwrap();
        }
        let mut c = q.consume_tasks(2).await.unwrap();
        let a = c.next().await.unwrap().unwrap();
        let _b = c.next().await.unwrap().unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), c.next()).await;
        assert!(third.is_err(), "a third delivery must wait for an answer");
        a.ack().await.unwrap();
        let c3 = c.next().await.unwrap().unwrap();
        assert_eq!(c3.message.shard.id, "000002");
    }

    #[tokio::test]
    async fn close_ends_consumers() {
        let q = MemoryQueue::new(5);
        let mut c = q.consume_results("spillway.results.u.r").await.unwrap();
        q.close();
        assert!(c.next().await.is_none());
    }
}
