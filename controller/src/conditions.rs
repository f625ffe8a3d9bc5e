//! Status conditions that change their transition time only when their
//! status flips, so `kubectl get -o yaml` tells how long a state has held.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// `True`, `False` or `Unknown`, as Kubernetes spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// Put a condition of `type_` into `conditions`. The transition time is
/// `now` for a new condition or a status flip, and kept otherwise; reason
/// and message are always updated. Returns whether anything changed, so
/// callers can skip a status write when nothing did.
pub fn upsert(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> bool {
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let flipped = existing.status != status.as_str();
            let changed = flipped
                || existing.reason != reason
                || existing.message != message
                || existing.observed_generation != observed_generation;
            if flipped {
                existing.status = status.as_str().to_owned();
                existing.last_transition_time = now;
            }
            existing.reason = reason.to_owned();
            existing.message = message;
            existing.observed_generation = observed_generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_owned(),
                status: status.as_str().to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation,
                last_transition_time: now,
            });
            true
        }
    }
}

/// The condition of `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut cs = Vec::new();
        assert!(upsert(
            &mut cs,
            "Ready",
            Status::True,
            "Evaluated",
            "ok",
            Some(1),
            at(100)
        ));
        // Same status, new message: changed, but the transition time stays.
        assert!(upsert(
            &mut cs,
            "Ready",
            Status::True,
            "Evaluated",
            "still ok",
            Some(1),
            at(200)
        ));
        assert_eq!(
            get(&cs, "Ready").map(|c| c.last_transition_time.clone()),
            Some(at(100))
        );
        // Identical: nothing changed, nothing to write.
        assert!(!upsert(
            &mut cs,
            "Ready",
            Status::True,
            "Evaluated",
            "still ok",
            Some(1),
            at(300)
        ));
        // Flip: the transition time moves.
        assert!(upsert(
            &mut cs,
            "Ready",
            Status::False,
            "PrometheusUnavailable",
            "timeout",
            Some(1),
            at(400)
        ));
        let ready = get(&cs, "Ready").expect("present");
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.clone()),
            ("False", at(400))
        );
        assert_eq!(cs.len(), 1);
    }
}
