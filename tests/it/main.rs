//! The integration tests, one module per area, built as one test binary so the AWS SDK, kube and
//! the webhook are linked once (cargo makes a binary of each `tests/*.rs`). Test names keep the
//! area: `cargo nextest run --test it refresher::` runs the refresher's.

mod common;

mod binary;
mod caller_auth;
mod credentials;
mod ecr_tokens;
mod flags;
mod monitoring;
mod moto;
mod policy_file;
mod refresher;
mod self_managed;
mod status;
mod tenancy;
mod tls_reload;
mod webhook_events;
mod webhook_tls;
