//! Process telemetry: structured logs through `tracing`, optional OpenTelemetry (OTLP)
//! trace export, and the process-wide `metrics` recorder rendered at `/metrics`.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide metrics handle; the first call installs the recorder. If another
/// recorder is already installed (tests), a detached one is returned so rendering works.
pub fn metrics_handle() -> &'static PrometheusHandle {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::debug!(
                "a metrics recorder was already installed; /metrics shows a detached one"
            );
        }
        handle
    })
}

/// A part of `/metrics` rendered at scrape time from live state rather than kept in the
/// recorder: per-target series that must vanish the moment a target leaves this process
/// (the recorder cannot forget a series once created).
pub trait ExpositionSource: Send + Sync {
    /// Appends complete metric families (HELP, TYPE, samples) in the text format.
    fn render(&self, out: &mut String);
}

static SOURCES: Mutex<Vec<Weak<dyn ExpositionSource>>> = Mutex::new(Vec::new());

/// Adds `source` to `/metrics` for as long as it lives (it is held weakly).
pub fn register_exposition_source(source: Weak<dyn ExpositionSource>) {
    let mut sources = SOURCES.lock().unwrap_or_else(|p| p.into_inner());
    sources.retain(|s| s.strong_count() > 0);
    sources.push(source);
}

/// The process's metrics in the text exposition format: the recorder's, then every live
/// [`ExpositionSource`].
pub fn render_metrics() -> String {
    let mut text = metrics_handle().render();
    let live: Vec<Arc<dyn ExpositionSource>> = {
        let mut sources = SOURCES.lock().unwrap_or_else(|p| p.into_inner());
        sources.retain(|s| s.strong_count() > 0);
        sources.iter().filter_map(Weak::upgrade).collect()
    };
    for source in live {
        source.render(&mut text);
    }
    text
}

/// Escapes a label value for the text exposition format (`\`, `"`, newline).
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Where to send traces. Export is off unless an endpoint is configured or one of the
/// standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables is set.
#[derive(Clone, Debug, Default)]
pub struct TracingOptions {
    /// `service.name` of the exported spans (`OTEL_SERVICE_NAME` wins when set).
    pub service_name: String,
    /// `service.instance.id`: the cluster instance name, or another id unique to the process.
    pub service_instance_id: Option<String>,
    /// OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: Option<String>,
    /// Log as JSON lines instead of text.
    pub json_logs: bool,
}

/// Keeps the trace pipeline alive; flushes pending spans when dropped.
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

fn otlp_endpoint_from_env() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// The resource of exported spans: `service.name` (from `OTEL_SERVICE_NAME` when given, else
/// the role's name), `service.instance.id` (else a random id per process, so two members'
/// spans never merge) and `service.version`; `OTEL_RESOURCE_ATTRIBUTES` adds the rest.
fn resource(
    options: &TracingOptions,
    env_service_name: Option<String>,
) -> opentelemetry_sdk::Resource {
    use opentelemetry::KeyValue;
    let instance = options
        .service_instance_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", options.service_name, std::process::id()));
    let builder = opentelemetry_sdk::Resource::builder().with_attributes([
        KeyValue::new("service.instance.id", instance),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ]);
    match env_service_name {
        // The default builder already read OTEL_SERVICE_NAME.
        Some(_) => builder.build(),
        None => builder
            .with_service_name(options.service_name.clone())
            .build(),
    }
}

/// Installs the global tracing subscriber (log filter from `RUST_LOG`, default `info`) and,
/// when configured, the OTLP span exporter. Call once per process, inside a tokio runtime.
pub fn init_tracing(options: &TracingOptions) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = if options.json_logs {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let endpoint = options
        .otlp_endpoint
        .clone()
        .or_else(otlp_endpoint_from_env);
    let provider = match endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| anyhow::anyhow!("OTLP exporter for {endpoint}: {e}"))?;
            let resource = resource(
                options,
                std::env::var("OTEL_SERVICE_NAME")
                    .ok()
                    .filter(|n| !n.is_empty()),
            );
            Some(
                opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };
    let otel_layer = provider.as_ref().map(|p| {
        let tracer = p.tracer("gnomon");
        tracing_opentelemetry::layer().with_tracer(tracer)
    });
    if provider.is_some() {
        enable_trace_propagation();
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("tracing already initialised: {e}"))?;
    Ok(TelemetryGuard { provider })
}

/// Set once spans leave the process. Hot paths (per-message publish and consume) check it
/// before doing any trace-context work, so with export off they pay one relaxed load.
static TRACE_EXPORT: AtomicBool = AtomicBool::new(false);

/// Turns on W3C trace-context propagation (HTTP headers, bus `traceparent`) process-wide.
/// [`init_tracing`] calls it when OTLP export is configured; a host that installs its own
/// OpenTelemetry layer (tests, embedders) calls it after doing so.
pub fn enable_trace_propagation() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    TRACE_EXPORT.store(true, Ordering::Release);
}

/// Whether spans are exported and trace context is propagated.
pub fn trace_propagation_enabled() -> bool {
    TRACE_EXPORT.load(Ordering::Relaxed)
}

/// HTTP headers as a propagation carrier.
struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A lone `traceparent` value as a propagation carrier (bus messages carry only that).
struct TraceparentCarrier<'a>(Option<&'a str>);

const TRACEPARENT: &str = "traceparent";

impl Extractor for TraceparentCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key == TRACEPARENT {
            self.0
        } else {
            None
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Collects the injected `traceparent`.
#[derive(Default)]
struct TraceparentSink(Option<String>);

impl Injector for TraceparentSink {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// Makes `span` a child of the caller's span from the W3C context in the request
/// `headers`. Returns whether a valid remote parent was found (and propagation is on);
/// the span must not have been entered yet.
pub fn adopt_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) -> bool {
    if !trace_propagation_enabled() || !headers.contains_key(TRACEPARENT) {
        return false;
    }
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderCarrier(headers)));
    set_valid_parent(span, parent)
}

/// Makes `span` a child of the span that wrote `traceparent` (a bus message's header).
/// Returns whether it was a valid context (and propagation is on).
pub fn adopt_traceparent(span: &tracing::Span, traceparent: &str) -> bool {
    if !trace_propagation_enabled() {
        return false;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&TraceparentCarrier(Some(traceparent)))
    });
    set_valid_parent(span, parent)
}

fn set_valid_parent(span: &tracing::Span, parent: opentelemetry::Context) -> bool {
    if !parent.span().span_context().is_valid() {
        return false;
    }
    match span.set_parent(parent) {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(%error, "cannot attach the remote trace context");
            false
        }
    }
}

/// The W3C `traceparent` of `span`, for a bus message header; `None` when propagation is
/// off or the span is not recorded.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !trace_propagation_enabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut sink = TraceparentSink::default();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut sink));
    sink.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Key;
    use tracing_subscriber::layer::SubscriberExt;

    fn attribute(resource: &opentelemetry_sdk::Resource, key: &'static str) -> Option<String> {
        resource
            .get(&Key::from_static_str(key))
            .map(|v| v.to_string())
    }

    #[test]
    fn spans_carry_instance_and_version_and_honor_otel_service_name() {
        let options = TracingOptions {
            service_name: "gnomon-collector".into(),
            service_instance_id: Some("gnomon1".into()),
            ..Default::default()
        };
        let own = resource(&options, None);
        assert_eq!(
            attribute(&own, "service.name").as_deref(),
            Some("gnomon-collector")
        );
        assert_eq!(
            attribute(&own, "service.instance.id").as_deref(),
            Some("gnomon1")
        );
        assert_eq!(
            attribute(&own, "service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        let anonymous = resource(
            &TracingOptions {
                service_name: "gnomon".into(),
                ..Default::default()
            },
            None,
        );
        assert!(attribute(&anonymous, "service.instance.id").is_some_and(|id| !id.is_empty()));
    }

    #[test]
    fn traceparent_round_trips_through_headers_and_bus_values() {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _default = tracing::subscriber::set_default(subscriber);

        let parent = tracing::info_span!("origin");
        assert_eq!(traceparent_of(&parent), None, "off until enabled");
        enable_trace_propagation();
        let value = traceparent_of(&parent).expect("a traceparent once enabled");
        assert!(value.starts_with("00-"), "{value}");

        let consumer = tracing::info_span!("consumer");
        assert!(adopt_traceparent(&consumer, &value));
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", value.parse().unwrap());
        let handler = tracing::info_span!("handler");
        assert!(adopt_remote_parent(&handler, &headers));
        assert!(!adopt_traceparent(&tracing::info_span!("bad"), "garbage"));
        assert!(!adopt_remote_parent(
            &tracing::info_span!("none"),
            &http::HeaderMap::new()
        ));
        drop((parent, consumer, handler));

        let spans = exporter.get_finished_spans().unwrap();
        let by_name = |name: &str| spans.iter().find(|s| s.name == name).unwrap().clone();
        let origin = by_name("origin");
        for child in ["consumer", "handler"] {
            let child = by_name(child);
            assert_eq!(
                child.span_context.trace_id(),
                origin.span_context.trace_id()
            );
            assert_eq!(child.parent_span_id, origin.span_context.span_id());
        }
    }
}
