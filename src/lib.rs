//! ecr-token-webhook: a mutating admission webhook that writes fresh Amazon ECR tokens into
//! opted-in Kubernetes Secrets.
//!
//! One folder per concern:
//! - [`admission`]: a review in, the decision, the answer out;
//! - [`secret`]: a Secret's kind, registries and plan, and the patches that write tokens;
//! - [`policy`]: who may receive tokens for what, the policy file and namespace labels;
//! - [`aws`]: ECR tokens through the SDK and the cache in front of them;
//! - [`refresher`]: the refresh cycle (list, decide, touch) and leader election;
//! - [`tls`]: serving pairs from files, generated or self-managed, and caller authentication;
//! - [`commands`]: `serve`, `status` and `certs`, and their flags.
//!
//! Beside them: [`server`] (the HTTP edge), [`reload`] (files re-read while serving),
//! [`events`] (Warning Events on secrets), [`metrics`] and [`logging`], and the shared pure
//! vocabularies [`registry`] (ECR hosts), [`state`] (a secret's state, for the refresher and
//! `status`), [`text`] and [`time`]. The map, with how a review and a refresh flow through the
//! files: docs/architecture.md.
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
