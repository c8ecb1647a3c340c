//! Files re-read while the server runs: the serving pair, the client CA and the policy file.
//! Each is polled by content, not by modification time or inotify, which follows a mounted
//! Secret or ConfigMap through the kubelet's symlink swap. A changed file that is valid goes
//! into service; one that is not is refused (counted and logged once, not at every poll) and
//! the one in service stays. One loop, [`spawn`], does this for all three; what each change
//! does is wired in `commands::reloads`.

use std::time::Duration;

use tokio::task::JoinHandle;

/// What one poll of a file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll<T> {
    Unchanged,
    Changed(T),
    /// Unreadable or invalid, in the words of its loader (which name the file).
    Refused(String),
}

/// A file (or pair of files) to poll.
pub trait Source: Send + 'static {
    type Value: Send + 'static;
    /// Reads the file; blocking, so [`spawn`] runs it off the async workers. Content that was
    /// refused is remembered too, so it reads as unchanged until it changes again.
    fn poll(&mut self) -> Poll<Self::Value>;
}

/// Polls `source` every `interval`; `on` gets each valid change, and each refusal unless it is
/// the same as the one before.
pub fn spawn<S: Source>(
    mut source: S,
    interval: Duration,
    mut on: impl FnMut(Result<S::Value, &str>) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_refusal: Option<String> = None;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let polled = tokio::task::spawn_blocking(move || {
                let found = source.poll();
                (source, found)
            })
            .await;
            let found = match polled {
                Ok((s, found)) => {
                    source = s;
                    found
                }
                Err(e) => {
                    tracing::error!(error = %e, "a file reloader failed; the file in service stays");
                    return;
                }
            };
            match found {
                Poll::Unchanged => {}
                Poll::Changed(value) => {
                    last_refusal = None;
                    on(Ok(value));
                }
                Poll::Refused(why) => {
                    if last_refusal.as_deref() != Some(why.as_str()) {
                        on(Err(&why));
                        last_refusal = Some(why);
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Plays back a script of polls.
    struct Script(Vec<Poll<u32>>);

    impl Source for Script {
        type Value = u32;
        fn poll(&mut self) -> Poll<u32> {
            if self.0.is_empty() {
                Poll::Unchanged
            } else {
                self.0.remove(0)
            }
        }
    }

    #[tokio::test]
    async fn reports_changes_and_each_refusal_once() {
        use Poll::*;
        let script = Script(vec![
            Unchanged,
            Refused("bad".into()),
            Refused("bad".into()),
            Changed(1),
            Refused("bad".into()),
            Refused("worse".into()),
            Unchanged,
            Changed(2),
        ]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let task = spawn(script, Duration::from_millis(5), move |found| {
            let entry = match found {
                Ok(n) => n.to_string(),
                Err(why) => why.to_string(),
            };
            into.lock().unwrap().push(entry);
        });
        for _ in 0..1000 {
            if seen.lock().unwrap().len() == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        assert_eq!(*seen.lock().unwrap(), ["bad", "1", "bad", "worse", "2"]);
    }
}
