//! Leader election over a `coordination.k8s.io/v1` Lease, so that of several coordinator
//! replicas exactly one publishes shards.
//!
//! A candidate takes the Lease when it is free, expired (`renewTime + leaseDurationSeconds` in
//! the past) or already its own, always with the Lease's `resourceVersion`: of two candidates
//! racing, one gets 409 Conflict and goes back to waiting. The leader renews every
//! `renew_every`; if it cannot renew before its own lease would expire, or finds another
//! holder, it has lost leadership and must stop publishing at once (the coordinator exits and
//! restarts as a candidate). On a clean shutdown the leader releases the Lease so a follower
//! takes over without waiting for it to expire.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::{Client, Error as KubeError};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
    /// Wait between attempts while another replica leads.
    pub retry_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lost the leader lease {namespace}/{name}: {why}")]
    Lost {
        namespace: String,
        name: String,
        why: String,
    },
    #[error("stopped before the leader lease was acquired")]
    Cancelled,
}

pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

enum Attempt {
    Acquired,
    HeldBy(String),
}

impl LeaderElector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self, cancel: &CancellationToken) -> Result<(), LeaseError> {
        let mut last_holder = String::new();
        loop {
            match self.try_acquire().await {
                Ok(Attempt::Acquired) => {
                    tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "became the leader");
                    return Ok(());
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if holder != last_holder {
                        tracing::info!(lease = %self.cfg.name, %holder, "another replica leads; waiting");
                        last_holder = holder;
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %self.cfg.name, error = %e, "could not take the leader lease; retrying")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(LeaseError::Cancelled),
                _ = tokio::time::sleep(self.cfg.retry_every) => {}
            }
        }
    }

    /// Renews the Lease until `cancel` fires (then releases it and returns `Ok`) or leadership
    /// is lost (returns the reason).
    pub async fn hold(&self, cancel: &CancellationToken) -> Result<(), LeaseError> {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.release().await;
                    return Ok(());
                }
                _ = tokio::time::sleep(self.cfg.renew_every) => {}
            }
            match self.try_acquire().await {
                Ok(Attempt::Acquired) => last_renewal = tokio::time::Instant::now(),
                Ok(Attempt::HeldBy(holder)) => {
                    return Err(self.lost(format!("{holder} holds it now")));
                }
                Err(e) => {
                    // Renewal failed; we still lead until our own lease would have expired.
                    if last_renewal.elapsed() + self.cfg.renew_every >= self.cfg.lease_duration {
                        return Err(self.lost(format!("could not renew it in time: {e}")));
                    }
                    tracing::warn!(lease = %self.cfg.name, error = %e, "leader lease renewal failed; retrying");
                }
            }
        }
    }

    fn lost(&self, why: String) -> LeaseError {
        LeaseError::Lost {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            why,
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    async fn try_acquire(&self) -> Result<Attempt, KubeError> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Acquired),
                Err(KubeError::Api(e)) if e.code == 409 => Ok(Attempt::HeldBy("(racing)".into())),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.cfg.identity;
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(renewed)), Some(secs)) => renewed
                .saturating_add(SignedDuration::from_secs(i64::from(secs)))
                .map(|t| t < now)
                .unwrap_or(true),
            _ => true,
        };
        if !ours && !holder.is_empty() && !expired {
            return Ok(Attempt::HeldBy(holder));
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours {
            spec.acquire_time.clone()
        } else {
            None
        };
        lease.spec = Some(self.spec(now, acquired, transitions));
        // `replace` sends the resourceVersion we read: a concurrent change gets 409.
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Acquired),
            Err(KubeError::Api(e)) if e.code == 409 => Ok(Attempt::HeldBy("(racing)".into())),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (best effort) so a follower need not wait for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.cfg.name, "released the leader lease"),
            Err(e) => {
                tracing::warn!(lease = %self.cfg.name, error = %e, "could not release the leader lease; it expires on its own")
            }
        }
    }
}
