//! ecr-token-webhook: a mutating admission webhook that writes fresh Amazon ECR tokens into
//! opted-in Kubernetes Secrets.
//!
//! Pure logic lives in [`registry`], [`secret`], [`policy`], [`refresh`] (the refresher's
//! decisions), [`state`] (a secret's state, shared by the refresher and `status`), [`text`] and
//! [`time`]; the edges are [`ecr`] and [`token`] (AWS and the token cache), [`server`] (HTTP),
//! [`tls`], [`selfmanaged`] and [`client_auth`] (TLS), [`policy_file`] and [`namespaces`] (the
//! policy's inputs), [`events`] (Warning Events on secrets), [`refresher`] and [`leader`] (the
//! refresh cycle), [`metrics`], [`logging`], [`cli`] and [`status`] (the commands), and
//! [`admission`], which joins them. The map, with how a review and a refresh flow through the
//! modules: docs/architecture.md.
//! No module imports one that imports it back (tests/release/test_module_graph.py).
#![forbid(unsafe_code)]

// The global allocator is chosen here, in the library, so the binary and the benchmark floor
// (benches/floor/null_webhook.rs) that links it always run on the same one. The C library's by
// default; see docs/benchmarks.md for what each measured.
#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("features \"mimalloc\" and \"jemalloc\" each set the global allocator: pick one");

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod admission;
pub mod aws;
pub mod commands;
pub mod events;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod refresher;
pub mod registry;
pub mod reload;
pub mod secret;
pub mod server;
pub mod state;
pub mod text;
pub mod time;
pub mod tls;
