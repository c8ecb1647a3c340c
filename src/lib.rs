//! ecr-token-webhook: a mutating admission webhook that writes fresh Amazon ECR tokens into
//! opted-in Kubernetes Secrets.
//!
//! Pure logic lives in [`registry`], [`secret`] and [`policy`]; the edges are [`ecr`] (AWS),
//! [`server`] (HTTP and TLS), [`policy_file`] and [`namespaces`] (the policy's inputs) and
//! [`admission`], which joins them.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cli;
pub mod ecr;
pub mod json;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod namespaces;
pub mod policy;
pub mod policy_file;
pub mod refresh;
pub mod refresher;
pub mod registry;
pub mod secret;
pub mod selfmanaged;
pub mod server;
pub mod status;
pub mod text;
pub mod time;
pub mod tls;
pub mod token;
