//! The runs in flight in this process: who holds which target, and how to
//! ask a run to abort. Shared by the reconcilers, the engine and the
//! dashboard, so it sits at the bottom of the module graph.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// A run this process is driving.
pub struct ActiveRun {
    /// `namespace/experiment`.
    pub experiment: String,
    /// What the fault touches (see `engine::target_key`).
    pub target: String,
    /// Send a reason to make the run abort and restore.
    pub abort: watch::Sender<Option<String>>,
}

impl ActiveRun {
    /// Ask the run to abort; the first reason given is the one it keeps.
    fn ask_abort(&self, why: &str) {
        self.abort.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(why.to_owned());
            }
            first
        });
    }
}

/// The runs in flight in this process, keyed by `namespace/run`.
#[derive(Default)]
pub struct Registry {
    runs: Mutex<HashMap<String, ActiveRun>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ActiveRun>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a run; `false` when it is already being driven.
    pub fn insert(&self, key: String, run: ActiveRun) -> bool {
        let mut runs = self.lock();
        if runs.contains_key(&key) {
            return false;
        }
        runs.insert(key, run);
        true
    }

    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// Runs of one experiment (`namespace/name`).
    pub fn of_experiment(&self, experiment: &str) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, r)| r.experiment == experiment)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The run holding `target`, if any.
    pub fn holder(&self, target: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(_, r)| r.target == target)
            .map(|(k, _)| k.clone())
    }

    /// Ask every run of `experiment` to abort.
    pub fn abort_experiment(&self, experiment: &str, why: &str) {
        for run in self.lock().values().filter(|r| r.experiment == experiment) {
            run.ask_abort(why);
        }
    }

    /// Ask one run (`namespace/run`) to abort.
    pub fn abort(&self, run: &str, why: &str) {
        if let Some(r) = self.lock().get(run) {
            r.ask_abort(why);
        }
    }

    /// Ask every run to abort (the operator is stopping).
    pub fn abort_all(&self, why: &str) {
        for run in self.lock().values() {
            run.ask_abort(why);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_aborts_only_the_experiment_asked() {
        let reg = Registry::default();
        let (tx_a, rx_a) = watch::channel(None);
        let (tx_b, rx_b) = watch::channel(None);
        assert!(reg.insert(
            "ns/a-1".into(),
            ActiveRun {
                experiment: "ns/a".into(),
                target: "pods/ns/app=a".into(),
                abort: tx_a,
            }
        ));
        assert!(reg.insert(
            "ns/b-1".into(),
            ActiveRun {
                experiment: "ns/b".into(),
                target: "pods/ns/app=b".into(),
                abort: tx_b,
            }
        ));
        let (tx_dup, _) = watch::channel(None);
        assert!(!reg.insert(
            "ns/a-1".into(),
            ActiveRun {
                experiment: "ns/a".into(),
                target: "x".into(),
                abort: tx_dup,
            }
        ));
        reg.abort_experiment("ns/a", "experiment deleted");
        assert_eq!(rx_a.borrow().as_deref(), Some("experiment deleted"));
        assert_eq!(*rx_b.borrow(), None);
        assert_eq!(reg.holder("pods/ns/app=b").as_deref(), Some("ns/b-1"));
        reg.remove("ns/b-1");
        assert_eq!(reg.holder("pods/ns/app=b"), None);
    }
}
