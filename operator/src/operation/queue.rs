//! One operation at a time per held object. Every upgrade and rollback that will hold Flux
//! objects records them in its status first ([`fluxup_api::Hold`]); that makes it a member of
//! the queue of each of those objects until it has released them. A request may start when no
//! member sharing one of its objects is ahead of it: one that already runs, or an older one
//! (creation time, then uid). Read from the watch caches of both kinds, so waiting costs no
//! API request; the object marks of [`super::holds`] guard against a cache that lags.

use fluxup_api::{Hold, QueuePosition, RollbackRequest, UpgradeRequest};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// A request as the queue sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `UpgradeRequest namespace/name`, as people read it.
    pub who: String,
    pub uid: String,
    pub created: Option<Timestamp>,
    pub holds: Vec<Hold>,
    /// Past its first phase: it may hold something now.
    pub running: bool,
    /// Has recorded what it will hold and not released it yet.
    pub queued: bool,
}

impl Member {
    pub fn of_upgrade(r: &UpgradeRequest) -> Member {
        let status = r.status.clone().unwrap_or_default();
        let phase = status.phase.unwrap_or_default();
        Member {
            who: describe("UpgradeRequest", r),
            uid: r.uid().unwrap_or_default(),
            created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            running: phase != fluxup_api::UpgradePhase::Pending,
            queued: !r.spec.dry_run && !status.holds.is_empty() && status.released_at.is_none(),
            holds: status.holds,
        }
    }

    pub fn of_rollback(r: &RollbackRequest) -> Member {
        let status = r.status.clone().unwrap_or_default();
        let phase = status.phase.unwrap_or_default();
        Member {
            who: describe("RollbackRequest", r),
            uid: r.uid().unwrap_or_default(),
            created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
            running: phase != fluxup_api::RollbackPhase::Pending,
            queued: !r.spec.dry_run && !status.holds.is_empty() && status.released_at.is_none(),
            holds: status.holds,
        }
    }
}

/// `UpgradeRequest namespace/name`.
pub fn describe<K: kube::Resource<DynamicType = ()>>(kind: &str, r: &K) -> String {
    format!(
        "{kind} {}/{}",
        r.meta().namespace.as_deref().unwrap_or_default(),
        r.meta().name.as_deref().unwrap_or_default()
    )
}

/// Where `me` stands among `members` (which may include `me`): who is ahead of it, the one
/// running first.
pub fn position(me: &Member, members: &[Member]) -> QueuePosition {
    let key = |m: &Member| (m.created, m.uid.clone());
    let mut ahead: Vec<&Member> = members
        .iter()
        .filter(|m| m.uid != me.uid && m.queued)
        .filter(|m| m.holds.iter().any(|h| me.holds.contains(h)))
        .filter(|m| m.running || key(m) < key(me))
        .collect();
    ahead.sort_by_key(|m| (!m.running, key(m)));
    QueuePosition {
        position: ahead.len() as u32 + 1,
        ahead: ahead.into_iter().map(|m| m.who.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(name: &str) -> Hold {
        Hold {
            kind: "Kustomization".into(),
            namespace: "flux-system".into(),
            name: name.into(),
        }
    }

    fn member(who: &str, secs: i64, holds: &[&str], running: bool) -> Member {
        Member {
            who: who.into(),
            uid: format!("uid-{who}"),
            created: Some(Timestamp::from_second(secs).unwrap()),
            holds: holds.iter().map(|h| hold(h)).collect(),
            running,
            queued: true,
        }
    }

    #[test]
    fn the_running_one_then_the_older_ones_sharing_an_object_go_first() {
        let me = member("me", 100, &["apps"], false);
        let members = vec![
            me.clone(),
            // Newer but already running (it recorded its holds before I did): ahead.
            member("running", 200, &["apps"], true),
            member("older", 50, &["apps", "infra"], false),
            member("newer", 150, &["apps"], false),
            // Older, but holds nothing of mine: not in my queue.
            member("elsewhere", 10, &["other"], true),
        ];
        let p = position(&me, &members);
        assert_eq!(p.position, 3);
        assert_eq!(p.ahead, ["running", "older"]);
    }

    #[test]
    fn released_and_unrecorded_requests_are_not_in_the_queue() {
        let me = member("me", 100, &["apps"], false);
        let mut done = member("done", 50, &["apps"], true);
        done.queued = false;
        assert_eq!(position(&me, &[done]).position, 1);
    }

    #[test]
    fn same_second_is_ordered_by_uid_so_exactly_one_goes() {
        let a = member("a", 100, &["apps"], false);
        let b = member("b", 100, &["apps"], false);
        let both = [a.clone(), b.clone()];
        assert_eq!(position(&a, &both).position, 1);
        assert_eq!(position(&b, &both).position, 2);
    }
}
