//! Monitoring's way out: every state change the monitor reports is POSTed
//! as a CloudEvent 1.0 in binary mode (the attributes as `ce-` headers, the
//! data as the JSON body) to each `--monitoring-webhook`: the entry point
//! of an alerting or retraining pipeline.
//!
//! Nothing here touches serving: the monitoring thread hands events over
//! through a bounded queue (a full one drops and counts), and one task
//! sends them in order, retrying a failed delivery with back-off; an event
//! still undelivered after the last try is counted as failed.
use std::time::Duration;

use metrics::counter;
use quiver_monitor::Event;
use tokio::sync::mpsc;

pub const EVENTS: &str = "quiver_monitoring_events_total";

/// Events waiting to be sent.
const QUEUE: usize = 1024;
/// Tries per event and webhook, and the first pause between two.
const TRIES: u32 = 5;
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// The sink the monitor calls, and the task that sends (none without
/// webhooks: events are then only logged and counted).
pub fn sink(urls: Vec<String>) -> impl Fn(Event) + Send + 'static {
    let sender = (!urls.is_empty()).then(|| {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(urls, receiver));
        sender
    });
    move |event: Event| {
        counter!(EVENTS, "outcome" => "raised").increment(1);
        if let Some(sender) = &sender
            && sender.try_send(event).is_err()
        {
            counter!(EVENTS, "outcome" => "dropped").increment(1);
            tracing::warn!("monitoring webhook queue full: a state-change event was dropped");
        }
    }
}

async fn deliver(urls: Vec<String>, mut events: mpsc::Receiver<Event>) {
    // reqwest builds no client before a rustls provider is installed.
    crate::tls::install_crypto_provider();
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; monitoring events are not sent");
            return;
        }
    };
    while let Some(event) = events.recv().await {
        // Shared by every try and webhook: a retry clones a reference count.
        let body = bytes::Bytes::from(serde_json::to_vec(&event.body()).unwrap_or_default());
        let time = crate::clock::rfc3339(event.window_end);
        for url in &urls {
            let mut pause = FIRST_PAUSE;
            let mut outcome = "failed";
            for attempt in 1..=TRIES {
                let sent = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("ce-specversion", "1.0")
                    .header("ce-id", &event.id)
                    .header("ce-type", event.kind())
                    .header("ce-source", event.source())
                    .header("ce-subject", subject(&event))
                    .header("ce-time", &time)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        outcome = "sent";
                        break;
                    }
                    // A receiver that refuses the event itself will refuse it again.
                    Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                        tracing::warn!(url, status = %r.status(), "monitoring webhook refused an event");
                        break;
                    }
                    other => {
                        let why = match other {
                            Ok(r) => r.status().to_string(),
                            Err(e) => e.to_string(),
                        };
                        tracing::warn!(url, attempt, reason = why, "monitoring webhook delivery failed");
                    }
                }
                if attempt < TRIES {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
            counter!(EVENTS, "outcome" => outcome).increment(1);
        }
    }
}

/// The `subject` attribute: the feature (`input/feature`) or `model`.
fn subject(event: &Event) -> String {
    match &event.change {
        Some(c) => format!("{}/{}", c.input, c.feature),
        None => "model".into(),
    }
}
