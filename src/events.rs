//! Warning Events on secrets, so `kubectl describe secret` shows why a secret got no token:
//! one place for the Event itself ([`secret_event`]), the webhook's rate-limited sender
//! ([`EventSink`]) and the advice on a Forbidden answer ([`missing_grant`]). Shared by the
//! webhook and the refresher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Error};

/// The Secret an Event is about: by namespace and name, with its uid and version when known (a
/// Secret being created has none yet).
pub struct SecretRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<&'a str>,
    pub resource_version: Option<&'a str>,
}

/// Which grant a Forbidden answer in `namespace` asks for, for the log line: the ClusterRole's
/// (cluster-wide mode: `namespaces` empty) or that namespace's Role (namespaced mode). None
/// outside the listed namespaces in namespaced mode: there the binary has no grant by design,
/// and advising one would widen RBAC beyond the list.
pub fn missing_grant(namespaces: &[String], namespace: &str, what: &str) -> Option<String> {
    if namespaces.is_empty() {
        Some(format!("the ClusterRole must grant {what}"))
    } else if namespaces.iter().any(|n| n == namespace) {
        Some(format!(
            "the Role in namespace {namespace} must grant {what}"
        ))
    } else {
        None
    }
}

/// Records a Warning Event with `reason` and `message` on the secret, so `kubectl describe
/// secret` shows it. Shared by the refresher and the webhook; `message` never holds a token.
pub async fn secret_event(
    client: &Client,
    secret: &SecretRef<'_>,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let ns = secret.namespace;
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let now = Time(Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", secret.name)),
            namespace: Some(ns.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some(secret.name.to_string()),
            namespace: Some(ns.to_string()),
            uid: secret.uid.map(str::to_string),
            resource_version: secret.resource_version.map(str::to_string),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some("Warning".into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("ecr-token-webhook".into()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("ecr-token-webhook".into()),
            ..Default::default()
        }),
        ..Event::default()
    };
    api.create(&PostParams::default(), &event).await.map(|_| ())
}

/// Warning Events on secrets the webhook fails open on or refuses by policy, rate-limited per
/// secret as the refresher's are ([`should_report`]): the 1st, 2nd, 4th, 8th... failed
/// write in a row. Sent off the request path; a success forgets the secret's count.
pub struct EventSink {
    client: kube::Client,
    /// Consecutive failed writes by namespace, then name (nested so a lookup borrows).
    failures: Mutex<HashMap<String, HashMap<String, u32>>>,
    forbidden_logged: AtomicBool,
    /// Namespaced mode's namespaces (empty: cluster-wide), for the advice on a Forbidden.
    namespaces: Vec<String>,
}

/// Secrets tracked at most; past it the counts start over (the first failure reports again).
const MAX_TRACKED: usize = 10_000;

impl EventSink {
    /// `namespaces`: the `--secret-namespaces` of namespaced mode, empty when cluster-wide.
    pub fn new(client: kube::Client, namespaces: Vec<String>) -> Arc<Self> {
        Arc::new(EventSink {
            client,
            failures: Mutex::new(HashMap::new()),
            forbidden_logged: AtomicBool::new(false),
            namespaces,
        })
    }

    /// Counts a failed write and says whether it is reported.
    pub(crate) fn failed(&self, namespace: &str, name: &str) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.values().map(HashMap::len).sum::<usize>() >= MAX_TRACKED {
            f.clear();
        }
        let count = f
            .entry(namespace.to_string())
            .or_default()
            .entry(name.to_string())
            .or_insert(0);
        *count = count.saturating_add(1);
        should_report(*count)
    }

    /// A token was written: the next failure is the first again.
    pub(crate) fn succeeded(&self, namespace: &str, name: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_empty() {
            return;
        }
        if let Some(names) = f.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                f.remove(namespace);
            }
        }
    }

    pub(crate) fn send(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        reason: &'static str,
        message: String,
    ) {
        let sink = self.clone();
        let (namespace, name, uid) = (
            namespace.to_string(),
            name.to_string(),
            uid.map(str::to_string),
        );
        tokio::spawn(async move {
            let secret = SecretRef {
                namespace: &namespace,
                name: &name,
                uid: uid.as_deref(),
                resource_version: None,
            };
            match secret_event(&sink.client, &secret, reason, message).await {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    match missing_grant(&sink.namespaces, &namespace, "create on events") {
                        Some(advice) => {
                            if !sink.forbidden_logged.swap(true, Ordering::Relaxed) {
                                tracing::warn!(namespace, secret = name, reason = %s.message, advice,
                                    "cannot record Events: forbidden (logged once)");
                            }
                        }
                        None => tracing::debug!(
                            namespace,
                            secret = name,
                            "no Event outside the secret namespaces (namespaced mode)"
                        ),
                    }
                }
                Err(e) => {
                    tracing::warn!(namespace, secret = name, error = %e, "could not record an Event")
                }
            }
        });
    }
}

/// Whether the `failures`-th failed touch in a row gets an Event: the 1st, 2nd, 4th, 8th...
/// A secret that cannot be refreshed for hours (its namespace outside the webhook's reach,
/// a registry the policy refuses) then costs a handful of Events, not one per retry.
pub fn should_report(failures: u32) -> bool {
    failures.is_power_of_two()
}

#[cfg(test)]
mod grant_tests {
    use super::{missing_grant, should_report};

    #[test]
    fn reports_failures_at_powers_of_two() {
        let reported: Vec<u32> = (0..=40).filter(|&n| should_report(n)).collect();
        assert_eq!(reported, [1, 2, 4, 8, 16, 32]);
    }

    #[test]
    fn a_forbidden_answer_names_the_grant_of_the_mode_and_none_outside_the_list() {
        let listed = ["argocd".to_string(), "apps".to_string()];
        for (namespaces, namespace, want) in [
            (
                &[][..],
                "apps",
                Some("the ClusterRole must grant create on events"),
            ),
            (
                &listed[..],
                "apps",
                Some("the Role in namespace apps must grant create on events"),
            ),
            // Namespaced mode: no advice that would widen RBAC beyond the list.
            (&listed[..], "team-b", None),
            (&listed[..], "", None),
        ] {
            assert_eq!(
                missing_grant(namespaces, namespace, "create on events").as_deref(),
                want,
                "{namespaces:?} {namespace:?}"
            );
        }
    }
}
