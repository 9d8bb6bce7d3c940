//! What every controller shares for telling people what happened: one Event reporter, Events
//! trimmed to what the API accepts, and timestamps in the whole seconds the API server stores.

use fluxup_api::Time;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// The recorder of FluxUp's Events (`reportingController: fluxup`, instance: the pod).
pub fn recorder(client: &Client) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: "fluxup".into(),
            instance: std::env::var("HOSTNAME").ok(),
        },
    )
}

/// Records an Event on `object`. A failure to record is logged, never fatal: the status says
/// the same.
pub async fn publish(
    recorder: &Recorder,
    object: &ObjectReference,
    warning: bool,
    action: &str,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        // The API refuses notes over 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, object).await {
        tracing::warn!(error = %e, "could not record an event");
    }
}

/// Now, in whole seconds: the API server stores no more, and a value written must compare
/// equal to the same value read back.
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

/// [`now`] as a Kubernetes `Time`.
pub fn now_time() -> Time {
    Time(now())
}
