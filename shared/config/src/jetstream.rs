//! gnmic's `jetstream` output and input: the NATS output / input keys (connection, format,
//! workers, buffers, processors) plus the stream.
//!
//! The output is a [`NatsOutputConfig`] with a stream, a subject format and how the
//! stream is made sure of; the input is a [`NatsInputConfig`] whose `jetstream` part names
//! the stream and the durable consumer. Keeping the NATS types underneath is what lets the
//! collector and the exporter run the same code (headers, fencing) on both transports.

use super::nats_input::NatsInputConfig;
use super::nats_output::{NatsOutputConfig, NATS_SKIP_VERIFY};
use super::reader::Section;
use super::serde_section::deserialize_section;
use super::ConfigError;
use serde::Serialize;
use std::time::Duration;

pub use super::jetstream_consume::{
    DeliverPolicy, InputSubjectFormat, JetStreamConsume, DEFAULT_FETCH_BATCH_SIZE,
    DEFAULT_INPUT_BUFFER_SIZE, DEFAULT_MAX_ACK_PENDING,
};

/// gnmic's `subject-format` of the JetStream output. Subjects always start with the
/// stream name, as gnmic's do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum JetStreamSubjectFormat {
    /// `<stream>.<subject>`.
    #[default]
    #[serde(rename = "static")]
    Static,
    /// `<stream>.<target>.<subscription>`.
    #[serde(rename = "target.subscription")]
    TargetSubscription,
    /// `<stream>.<subscription>.<target>`.
    #[serde(rename = "subscription.target")]
    SubscriptionTarget,
}

impl JetStreamSubjectFormat {
    fn parse(section: &Section<'_>) -> Result<Self, ConfigError> {
        let Some(text) = section.string("subject-format")? else {
            return Ok(Self::Static);
        };
        match text.trim() {
            "" | "static" => Ok(Self::Static),
            "target.subscription" => Ok(Self::TargetSubscription),
            "subscription.target" => Ok(Self::SubscriptionTarget),
            "subscription.target.path" | "subscription.target.pathKeys" => {
                Err(ConfigError::invalid(
                    section.key_path("subject-format"),
                    &serde_json::Value::String(text),
                    "is not supported by gnomon (one subject per path would split every \
                     notification); use static, target.subscription or subscription.target",
                ))
            }
            _ => Err(ConfigError::invalid(
                section.key_path("subject-format"),
                &serde_json::Value::String(text),
                "is not a subject format (expected static, target.subscription or subscription.target)",
            )),
        }
    }
}

/// Storage of a stream the output creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamStorage {
    Memory,
    File,
}

/// Retention of a stream the output creates (gnmic's `retention-policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamRetention {
    Limits,
    Workqueue,
}

/// gnmic's `create-stream` block.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CreateStream {
    pub description: String,
    pub subjects: Vec<String>,
    pub storage: StreamStorage,
    pub retention_policy: StreamRetention,
    pub max_msgs: i64,
    pub max_bytes: i64,
    #[serde(serialize_with = "super::duration::serialize_ns")]
    pub max_age: Duration,
    pub max_msg_size: i32,
}

/// How the output makes sure of its stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamSetup {
    /// Neither key: publish to the stream as it is.
    Assume,
    /// `use-existing-stream: true`: it must exist.
    UseExisting,
    /// `create-stream`: created when missing.
    Create(CreateStream),
}

/// gnmic's `jetstream` output.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct JetStreamOutputConfig {
    /// Connection, format, workers, buffers and processors, as the NATS output reads them
    /// (`subject` is the static subject; there is no `subject-prefix`).
    #[serde(flatten)]
    pub nats: NatsOutputConfig,
    pub stream: String,
    pub subject_format: JetStreamSubjectFormat,
    pub stream_setup: StreamSetup,
}

/// Checks a JetStream stream or consumer name: gnmic's rule (no whitespace, `.`, `>`, `*`).
fn check_name(section: &Section<'_>, key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '>' | '*' | '/' | '\\'))
    {
        return Err(ConfigError::invalid(
            section.key_path(key),
            &serde_json::Value::String(name.to_string()),
            "is not a JetStream name (non-empty, without spaces, '.', '>', '*', '/' or '\\')",
        ));
    }
    Ok(())
}

fn check_subjects(
    section: &Section<'_>,
    key: &str,
    subjects: &[String],
) -> Result<(), ConfigError> {
    for (i, subject) in subjects.iter().enumerate() {
        if let Err(e) = gnomon_bus::validate_subject(subject, true) {
            return Err(ConfigError::invalid(
                format!("{}[{i}]", section.key_path(key)),
                &serde_json::Value::String(subject.clone()),
                format!("is not a NATS subject ({e})"),
            ));
        }
    }
    Ok(())
}

impl CreateStream {
    fn from_section(stream: &str, section: &Section<'_>) -> Result<Self, ConfigError> {
        let mut subjects = section.string_list("subjects")?;
        if subjects.is_empty() {
            subjects.push(format!("{stream}.>"));
        }
        check_subjects(section, "subjects", &subjects)?;
        let storage = match section.string("storage")?.as_deref().map(str::trim) {
            None | Some("") | Some("memory") => StreamStorage::Memory,
            Some("file") => StreamStorage::File,
            Some(other) => {
                return Err(ConfigError::invalid(
                    section.key_path("storage"),
                    &serde_json::Value::String(other.to_string()),
                    "is not a storage type (expected memory or file)",
                ))
            }
        };
        let retention_policy = match section
            .string("retention-policy")?
            .map(|s| s.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("limits") => StreamRetention::Limits,
            Some("workqueue") => StreamRetention::Workqueue,
            Some(other) => {
                return Err(ConfigError::invalid(
                    section.key_path("retention-policy"),
                    &serde_json::Value::String(other.to_string()),
                    "is not a retention policy (expected limits or workqueue)",
                ))
            }
        };
        let non_negative = |key: &str| -> Result<i64, ConfigError> {
            match section.i64(key)? {
                Some(n) if n < 0 => Err(ConfigError::invalid(
                    section.key_path(key),
                    &n.into(),
                    "is negative (0 means unlimited)",
                )),
                n => Ok(n.unwrap_or(0)),
            }
        };
        let max_msgs = non_negative("max-msgs")?;
        let max_bytes = non_negative("max-bytes")?;
        let max_msg_size = i32::try_from(non_negative("max-msg-size")?).map_err(|_| {
            ConfigError::invalid(
                section.key_path("max-msg-size"),
                section
                    .raw("max-msg-size")
                    .unwrap_or(&serde_json::Value::Null),
                "is too large (at most 2147483647 bytes)",
            )
        })?;
        let config = Self {
            description: section
                .string_if_set("description")?
                .unwrap_or_else(|| "created by gnomon".to_string()),
            subjects,
            storage,
            retention_policy,
            max_msgs,
            max_bytes,
            max_age: section.duration("max-age")?.unwrap_or_default(),
            max_msg_size,
        };
        section.warn_unknown_keys();
        Ok(config)
    }
}

impl JetStreamOutputConfig {
    pub(crate) fn from_section(name: &str, section: &Section<'_>) -> Result<Self, ConfigError> {
        let Some(stream) = section.string_if_set("stream")? else {
            return Err(ConfigError::Missing {
                key: section.key_path("stream"),
                expected: "the JetStream stream to publish to".into(),
            });
        };
        check_name(section, "stream", &stream)?;
        if section.has("subject-prefix") {
            return Err(ConfigError::invalid(
                section.key_path("subject-prefix"),
                section
                    .raw("subject-prefix")
                    .unwrap_or(&serde_json::Value::Null),
                "is a nats output key; the jetstream output names subjects with subject-format",
            ));
        }
        let subject_format = JetStreamSubjectFormat::parse(section)?;
        let use_existing = section.bool("use-existing-stream")?.unwrap_or(false);
        let create = section.section("create-stream")?;
        let stream_setup = match (use_existing, create) {
            (true, Some(_)) => {
                return Err(ConfigError::Message(format!(
                    "{} and {} are mutually exclusive",
                    section.key_path("use-existing-stream"),
                    section.key_path("create-stream")
                )))
            }
            (true, None) => StreamSetup::UseExisting,
            (false, Some(block)) => {
                StreamSetup::Create(CreateStream::from_section(&stream, &block)?)
            }
            (false, None) => StreamSetup::Assume,
        };
        let nats = NatsOutputConfig::from_section(name, section)?;
        let config = Self {
            nats,
            stream,
            subject_format,
            stream_setup,
        };
        if config.subject_format == JetStreamSubjectFormat::Static {
            let subject = config.static_subject();
            if let Err(e) = gnomon_bus::validate_subject(&subject, false) {
                return Err(ConfigError::invalid(
                    section.key_path("subject"),
                    &serde_json::Value::String(config.nats.subject.clone()),
                    format!("does not make a NATS subject ({e})"),
                ));
            }
        }
        Ok(config)
    }

    /// The subject of `subject-format: static`: `<stream>.<subject>`.
    pub fn static_subject(&self) -> String {
        format!("{}.{}", self.stream, self.nats.subject)
    }
}

/// The keys of gnmic's JetStream input read through the NATS input's serde type.
const SHARED_KEYS: &[&str] = &[
    "name",
    "address",
    "format",
    "num-workers",
    "buffer-size",
    "connect-time-wait",
    "username",
    "password",
    "token",
    "credentials-file",
    "tls",
    "debug",
    "event-processors",
    "outputs",
];

/// Reads `inputs.<name>` with `type: jetstream` into the NATS input type with its
/// `jetstream` part set.
pub(crate) fn input_from_section(
    name: &str,
    section: &Section<'_>,
) -> Result<NatsInputConfig, ConfigError> {
    let mut config: NatsInputConfig = deserialize_section(section, SHARED_KEYS)?;
    if section.raw("buffer-size").is_none() {
        config.buffer_size = DEFAULT_INPUT_BUFFER_SIZE;
    }
    let Some(stream) = section.string_if_set("stream")? else {
        return Err(ConfigError::Missing {
            key: section.key_path("stream"),
            expected: "the JetStream stream to consume".into(),
        });
    };
    check_name(section, "stream", &stream)?;
    if !config.name.is_empty() {
        check_name(section, "name", &config.name)?;
    }
    let subjects = section.string_list("subjects")?;
    check_subjects(section, "subjects", &subjects)?;
    let deliver_policy = match section
        .string("deliver-policy")?
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("all") => DeliverPolicy::All,
        Some("last") => DeliverPolicy::Last,
        Some("new") => DeliverPolicy::New,
        Some("last-per-subject") => DeliverPolicy::LastPerSubject,
        Some(other) => {
            return Err(ConfigError::invalid(
                section.key_path("deliver-policy"),
                &serde_json::Value::String(other.to_string()),
                "is not a deliver policy (expected all, last, new or last-per-subject)",
            ))
        }
    };
    let subject_format = match section.string("subject-format")?.as_deref().map(str::trim) {
        None | Some("") | Some("static") => InputSubjectFormat::Static,
        Some("subscription.target") => InputSubjectFormat::SubscriptionTarget,
        Some("target.subscription") => InputSubjectFormat::TargetSubscription,
        Some(other) => return Err(ConfigError::invalid(
            section.key_path("subject-format"),
            &serde_json::Value::String(other.to_string()),
            "is not a subject format (expected static, subscription.target or target.subscription)",
        )),
    };
    let positive = |key: &str, default: u64| -> Result<u64, ConfigError> {
        match section.u64(key)? {
            None | Some(0) => Ok(default),
            Some(n) if n > 1_000_000 => Err(ConfigError::invalid(
                section.key_path(key),
                &n.into(),
                "is too large (at most 1000000)",
            )),
            Some(n) => Ok(n),
        }
    };
    let fetch_batch_size = positive("fetch-batch-size", DEFAULT_FETCH_BATCH_SIZE as u64)? as usize;
    let max_ack_pending = positive("max-ack-pending", DEFAULT_MAX_ACK_PENDING as u64)? as i64;
    if let Some(tls) = section.section("tls")? {
        tls.unsupported_unless(
            "skip-verify",
            &serde_json::Value::Bool(false),
            NATS_SKIP_VERIFY,
        );
    }
    section.unsupported_unless(
        "debug",
        &serde_json::Value::Bool(false),
        "use RUST_LOG=gnomon_exporter=debug",
    );
    section.raw("type");
    section.warn_unknown_keys();
    config.jetstream = Some(JetStreamConsume {
        stream,
        subjects,
        deliver_policy,
        subject_format,
        fetch_batch_size,
        max_ack_pending,
    });
    config.validate(name)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_config_with_env, ConfigFormat, InputConfig, OutputConfig};

    fn load(yaml: &str) -> Result<crate::GnomonConfig, String> {
        load_config_with_env(yaml, ConfigFormat::Yaml, &[]).map_err(|e| e.to_string())
    }

    fn output(yaml: &str) -> JetStreamOutputConfig {
        match load(yaml).unwrap().outputs.into_values().next() {
            Some(OutputConfig::Jetstream(config)) => config,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn warnings(yaml: &str) -> Vec<String> {
        load(yaml)
            .unwrap()
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn output_defaults_follow_gnmic() {
        let config = output("outputs:\n  js:\n    type: jetstream\n    stream: tele\n");
        assert_eq!(config.nats.address, "localhost:4222");
        assert_eq!(config.subject_format, JetStreamSubjectFormat::Static);
        assert_eq!(config.static_subject(), "tele.telemetry");
        assert_eq!(config.stream_setup, StreamSetup::Assume);
        assert_eq!(config.nats.name, "js");

        let created = output(
            "outputs:\n  js:\n    type: jetstream\n    stream: tele\n    subject-format: subscription.target\n    create-stream:\n      storage: file\n      retention-policy: WorkQueue\n      max-msgs: 10\n      max-age: 1h\n",
        );
        let StreamSetup::Create(create) = created.stream_setup else {
            panic!("no create-stream");
        };
        assert_eq!(create.subjects, vec!["tele.>".to_string()]);
        assert_eq!(create.storage, StreamStorage::File);
        assert_eq!(create.retention_policy, StreamRetention::Workqueue);
        assert_eq!(create.max_msgs, 10);
        assert_eq!(create.max_age, Duration::from_secs(3600));
        assert_eq!(
            created.subject_format,
            JetStreamSubjectFormat::SubscriptionTarget
        );
    }

    #[test]
    fn output_refusals_name_the_key() {
        let cases = [
            (
                "    subject-format: subscription.target.path\n",
                "outputs.js.subject-format",
            ),
            ("    subject-format: other\n", "outputs.js.subject-format"),
            ("    subject-prefix: x\n", "outputs.js.subject-prefix"),
            (
                "    use-existing-stream: true\n    create-stream: {}\n",
                "outputs.js.use-existing-stream",
            ),
            (
                "    create-stream:\n      storage: disk\n",
                "outputs.js.create-stream.storage",
            ),
            (
                "    create-stream:\n      retention-policy: interest\n",
                "outputs.js.create-stream.retention-policy",
            ),
            (
                "    create-stream:\n      max-msgs: -1\n",
                "outputs.js.create-stream.max-msgs",
            ),
            (
                "    create-stream:\n      subjects: [\"a..b\"]\n",
                "outputs.js.create-stream.subjects[0]",
            ),
            ("    format: protojson\n", "outputs.js.format"),
        ];
        for (extra, key) in cases {
            let err = load(&format!(
                "outputs:\n  js:\n    type: jetstream\n    stream: tele\n{extra}"
            ))
            .unwrap_err();
            assert!(err.contains(key), "{extra:?}: {err}");
        }
        let missing = load("outputs:\n  js:\n    type: jetstream\n").unwrap_err();
        assert!(missing.contains("outputs.js.stream"), "{missing}");
        let bad_name = load("outputs:\n  js:\n    type: jetstream\n    stream: a.b\n").unwrap_err();
        assert!(bad_name.contains("outputs.js.stream"), "{bad_name}");
    }

    #[test]
    fn unsupported_output_keys_are_named() {
        let warned = warnings(
            "outputs:\n  js:\n    type: jetstream\n    stream: tele\n    msg-template: x\n    add-target: overwrite\n    bogus: 1\n",
        );
        for key in [
            "outputs.js.msg-template",
            "outputs.js.add-target",
            "outputs.js.bogus",
        ] {
            assert!(
                warned.iter().any(|w| w.starts_with(key)),
                "{key}: {warned:#?}"
            );
        }
        let clean = warnings(
            "outputs:\n  js:\n    type: jetstream\n    stream: tele\n    use-existing-stream: true\n    subject: s\n    num-workers: 2\n    buffer-size: 10\n    write-timeout: 1s\n    connect-time-wait: 1s\n    split-events: true\n",
        );
        assert!(clean.is_empty(), "{clean:#?}");
    }

    fn input(yaml: &str) -> NatsInputConfig {
        match load(yaml).unwrap().inputs.into_values().next() {
            Some(InputConfig::Jetstream(config)) => config,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn input_defaults_follow_gnmic_and_keys_are_read() {
        let config = input("inputs:\n  in:\n    type: jetstream\n    stream: tele\n");
        let js = config.jetstream.clone().unwrap();
        assert_eq!(config.buffer_size, DEFAULT_INPUT_BUFFER_SIZE);
        assert_eq!(js.fetch_batch_size, DEFAULT_FETCH_BATCH_SIZE);
        assert_eq!(js.max_ack_pending, DEFAULT_MAX_ACK_PENDING);
        assert_eq!(js.deliver_policy, DeliverPolicy::All);
        assert_eq!(config.durable_name("in", "gnomon-1"), "gnomon-1-in");
        assert_eq!(config.durable_name("in", ""), "in");

        let text = "inputs:\n  in:\n    type: jetstream\n    name: js-consumer\n    stream: tele\n    subjects: [tele.a.*, tele.b.>]\n    format: proto\n    deliver-policy: last-per-subject\n    subject-format: target.subscription\n    num-workers: 2\n    buffer-size: 10\n    fetch-batch-size: 20\n    max-ack-pending: 30\n    connect-time-wait: 3s\n";
        assert!(warnings(text).is_empty(), "{:#?}", warnings(text));
        let config = input(text);
        let js = config.jetstream.clone().unwrap();
        assert_eq!(js.subjects.len(), 2);
        assert_eq!(js.deliver_policy, DeliverPolicy::LastPerSubject);
        assert_eq!(js.subject_format, InputSubjectFormat::TargetSubscription);
        assert_eq!((js.fetch_batch_size, js.max_ack_pending), (20, 30));
        assert_eq!(config.buffer_size, 10);
        assert_eq!(config.durable_name("in", "gnomon-1"), "js-consumer");

        let queue =
            warnings("inputs:\n  in:\n    type: jetstream\n    stream: tele\n    queue: q\n");
        assert!(
            queue.iter().any(|w| w.starts_with("inputs.in.queue")),
            "{queue:#?}"
        );
    }

    #[test]
    fn input_refusals_name_the_key() {
        for (extra, key) in [
            ("    deliver-policy: by-time\n", "inputs.in.deliver-policy"),
            ("    subject-format: x\n", "inputs.in.subject-format"),
            ("    subjects: [\"a b\"]\n", "inputs.in.subjects[0]"),
            ("    name: a.b\n", "inputs.in.name"),
            (
                "    fetch-batch-size: 2000000\n",
                "inputs.in.fetch-batch-size",
            ),
        ] {
            let err = load(&format!(
                "inputs:\n  in:\n    type: jetstream\n    stream: tele\n{extra}"
            ))
            .unwrap_err();
            assert!(err.contains(key), "{extra:?}: {err}");
        }
        let missing = load("inputs:\n  in:\n    type: jetstream\n").unwrap_err();
        assert!(missing.contains("inputs.in.stream"), "{missing}");
    }
}
