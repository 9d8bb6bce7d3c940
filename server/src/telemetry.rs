//! Logging through `tracing`. `RUST_LOG` sets the filter (default `info`). In JSON, each line is
//! one object whose `span` holds the fields of the span it was written in: `operation` (the
//! UpgradeRequest's or RollbackRequest's uid) and `request` for the controllers' work,
//! `request_id` for HTTP requests.

use crate::cli::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match format {
        LogFormat::Json => json(std::io::stdout, filter()).init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter()).init(),
    }
}

/// The JSON subscriber, writing to `writer`.
fn json<W>(
    writer: W,
    filter: EnvFilter,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::JsonFields,
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
    EnvFilter,
    W,
>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_operation_id() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = json(move || writer.clone(), EnvFilter::new("info")).finish();
        tracing::subscriber::with_default(subscriber, || {
            let request = fluxup_api::UpgradeRequest::new(
                "web-2",
                serde_json::from_value(serde_json::json!({"managedAppRef": {"name": "web"}}))
                    .unwrap(),
            );
            let mut request = request;
            request.metadata.namespace = Some("shop".into());
            request.metadata.uid = Some("5f0c1d2e".into());
            let span = fluxup_operator::operation::span(&request);
            let _in = span.enter();
            tracing::info!(step = "CreateSnapshots", "upgrade step");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "upgrade step");
        assert_eq!(line["step"], "CreateSnapshots");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"]["operation"], "5f0c1d2e");
        assert_eq!(line["span"]["request"], "shop/web-2");
        assert_eq!(line["span"]["kind"], "UpgradeRequest");
    }
}
