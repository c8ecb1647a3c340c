//! The commands: their flags ([`cli`]), [`serve`], [`status`] and [`certs`], and what `serve`
//! does when a file it re-reads changes ([`reloads`]). `main.rs` only parses and dispatches.

pub mod certs;
pub mod cli;
pub mod reloads;
pub mod serve;
pub mod status;
