//! The admission path in a loop, for instruction counts: callgrind counts instructions, which
//! do not depend on how busy the machine is, as time does.
//!
//!   review-loop N [FIXTURE]         N reviews of FIXTURE (default: the captured touch) through
//!                                   `Webhook::review` and `to_json`, warm cache, as
//!                                   benches/common sets it up
//!   review-loop N [FIXTURE] floor   the floor's own work instead: a uid-only serde_json parse
//!
//! Instructions per review: the difference between two counts, which cancels start-up:
//!   valgrind --tool=callgrind target/release/examples/review-loop 10000   (then 20000)

use ecr_token_webhook::admission::to_json;

#[path = "../common/mod.rs"]
mod common;

#[derive(serde::Deserialize)]
struct Review<'a> {
    #[serde(borrow)]
    request: Request<'a>,
}

#[derive(serde::Deserialize)]
struct Request<'a> {
    uid: &'a str,
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .ok_or("usage: review-loop N [FIXTURE] [floor]")?;
    let fixture = args
        .get(2)
        .map_or("tests/fixtures/argocd-repository-update-touch.json", |s| s);
    let body = std::fs::read(fixture).map_err(|e| format!("{fixture}: {e}"))?;
    let mut bytes = 0;
    if args.get(3).is_some_and(|a| a == "floor") {
        for _ in 0..n {
            let r: Review =
                serde_json::from_slice(std::hint::black_box(&body)).map_err(|e| e.to_string())?;
            bytes += serde_json::to_string(r.request.uid)
                .map_err(|e| e.to_string())?
                .len();
        }
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let webhook = common::webhook();
        for _ in 0..n {
            let answer = rt
                .block_on(webhook.review(std::hint::black_box(&body), common::BUDGET))
                .map_err(|e| e.to_string())?;
            bytes += to_json(&answer).map_err(|e| e.to_string())?.len();
        }
    }
    println!("{n} reviews, {bytes} bytes answered");
    Ok(())
}
