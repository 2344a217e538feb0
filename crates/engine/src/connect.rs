//! Turning an ExportJob spec plus resolved Secrets into a source client configuration and a
//! storage handle. The only place where credentials are materialised; they go straight into
//! the client objects and are never logged or stored.

use std::sync::Arc;
use std::time::Duration;

use spillway_api::{Destination, ExportJobSpec, OutputSpec};
use spillway_sigv4::Credentials;
use spillway_sink::storage::{self, Storage};
use spillway_source::{Auth, SourceConfig};

use crate::EngineError;
use crate::secrets::SecretResolver;

pub async fn source_config(
    spec: &ExportJobSpec,
    secrets: &dyn SecretResolver,
) -> Result<SourceConfig, EngineError> {
    let src = &spec.source;
    let mut cfg = SourceConfig::new(src.url.clone());
    if let Some(auth) = &src.auth {
        if let Some(b) = &auth.basic {
            cfg.auth = Auth::Basic {
                username: secrets.get(&b.secret_ref.name, &b.username_key).await?,
                password: secrets.get(&b.secret_ref.name, &b.password_key).await?,
            };
        } else if let Some(k) = &auth.api_key {
            cfg.auth = Auth::ApiKey(secrets.get(&k.secret_ref.name, &k.key).await?);
        } else if let Some(s) = &auth.aws_sig_v4 {
            cfg.auth = Auth::SigV4 {
                credentials: aws_credentials(
                    s.secret_ref.as_ref().map(|r| r.name.as_str()),
                    secrets,
                )
                .await?,
                region: s.region.clone(),
                service: s.service.as_str().to_string(),
            };
        }
    }
    if let Some(tls) = &src.tls {
        if let Some(ca) = &tls.ca_secret_ref {
            cfg.ca_pem = Some(secrets.get(&ca.name, &tls.ca_key).await?.into_bytes());
        }
        cfg.insecure_skip_verify = tls.insecure_skip_verify;
    }
    cfg.requests_per_second = src.requests_per_second;
    cfg.flavor_override = src.flavor;
    cfg.request_timeout = Duration::from_secs(120);
    Ok(cfg)
}

/// AWS credentials from a Secret (`accessKeyId`, `secretAccessKey`, `sessionToken`) or, without
/// one, from the `AWS_*` environment variables.
pub async fn aws_credentials(
    secret: Option<&str>,
    secrets: &dyn SecretResolver,
) -> Result<Credentials, EngineError> {
    match secret {
        Some(name) => Ok(Credentials {
            access_key_id: secrets.get(name, "accessKeyId").await?,
            secret_access_key: secrets.get(name, "secretAccessKey").await?,
            session_token: secrets.get_optional(name, "sessionToken").await?,
        }),
        None => Credentials::from_env().map_err(|_| {
            EngineError::Secret(
                "no AWS credentials: reference a Secret with accessKeyId/secretAccessKey, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .into(),
            )
        }),
    }
}

/// Opens the job's destination with its part size.
pub async fn open_storage(
    output: &OutputSpec,
    secrets: &dyn SecretResolver,
) -> Result<Arc<dyn Storage>, EngineError> {
    let creds = match &output.destination.s3 {
        Some(s3) => {
            Some(aws_credentials(s3.secret_ref.as_ref().map(|r| r.name.as_str()), secrets).await?)
        }
        None => None,
    };
    Ok(storage::open_output(output, creds).await?)
}

/// A human-facing URI of a key: `s3://bucket/key` or a filesystem path.
pub fn uri_of(dest: &Destination, key: &str) -> String {
    match (&dest.s3, &dest.volume) {
        (Some(s3), _) => format!("s3://{}/{}", s3.bucket, key.trim_start_matches('/')),
        (None, Some(v)) => format!(
            "{}/{}",
            v.path.trim_end_matches('/'),
            key.trim_start_matches('/')
        ),
        (None, None) => key.to_string(),
    }
}

/// The key prefix inside the destination root where the job's runs live.
pub fn destination_prefix(dest: &Destination) -> &str {
    dest.s3.as_ref().map(|s| s.prefix.as_str()).unwrap_or("")
}
