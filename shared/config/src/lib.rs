//! gnmic-compatible configuration: the same YAML / JSON / TOML keys, defaults,
//! `GNMIC_*` (and `GNOMON_*`) environment overrides and `$VAR` expansion.
//!
//! Loading goes file text → `config` crate → JSON tree → environment overrides → typed
//! sections ([`reader::Section`]). Every invalid value gives one error line naming the key,
//! the value and what was expected; every unknown key gives a warning.
//!
//! Sections owned by other services (the Prometheus output, the NATS input) are parsed by
//! their own modules from the raw maps kept in [`OutputConfig`] / [`InputConfig`].

pub mod actions;
mod address;
mod api;
mod clustering;
pub mod defaults;
mod env;
mod error;
pub mod expand;
pub mod gnmi_server;
pub mod gotemplate;
mod input;
pub mod jetstream;
mod jetstream_consume;
pub mod loader;
pub mod locker;
pub mod names;
pub mod nats_input;
mod nats_output;
mod output;
pub mod prometheus_output;
pub mod prometheus_write_output;
pub mod reader;
mod serde_section;
mod subscription;
mod target;
mod tls_files;
pub mod warning;
pub mod yaml;

pub use address::{check_host_port, check_nats_servers};
pub use api::{ApiConfig, ApiTls, DEFAULT_API_ADDRESS};
pub use clustering::ClusteringConfig;
pub use env::apply_env_overrides;
pub use error::ConfigError;
pub use gnmi_server::GnmiServerConfig;
pub use gnomon_common::duration;
pub use gnomon_common::secret;
pub use input::InputConfig;
pub use output::{
    FileDestination, FileOutputConfig, FileRotation, NatsFormat, NatsOutputConfig, OutputConfig,
    TlsFiles, DEFAULT_OUTPUT_BUFFER,
};
pub use reader::Section;
pub use secret::{Secret, REDACTED};
pub use subscription::{
    Encoding, StreamMode, SubscriptionConfig, SubscriptionMode, DEFAULT_POLL_INTERVAL,
};
pub use target::{
    with_default_port, GlobalConfig, GrpcKeepalive, TargetConfig, TlsVersion, DEFAULT_BUFFER_SIZE,
    DEFAULT_CLUSTER_NAME, DEFAULT_PORT, DEFAULT_RETRY_TIMER, DEFAULT_TIMEOUT,
    SUPPORTED_CIPHER_SUITES,
};
pub use warning::ConfigWarning;

use names::NameKind;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The largest configuration file (or text) read, in bytes.
pub const MAX_DOCUMENT_SIZE: u64 = 16 << 20;

/// File formats the loader reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigFormat {
    Yaml,
    Json,
    Toml,
}

impl ConfigFormat {
    /// The format named by a file extension (`yaml`/`yml`, `json`, `toml`); YAML otherwise.
    pub fn from_path(path: &Path) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => Self::Json,
            Some("toml") => Self::Toml,
            _ => Self::Yaml,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Serialize, PartialEq, Default)]
#[serde(rename_all = "kebab-case")]
pub struct GnomonConfig {
    #[serde(flatten)]
    pub globals: GlobalConfig,
    /// Targets by name, globals applied.
    pub targets: BTreeMap<String, TargetConfig>,
    pub subscriptions: BTreeMap<String, SubscriptionConfig>,
    pub outputs: BTreeMap<String, OutputConfig>,
    pub inputs: BTreeMap<String, InputConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clustering: Option<ClusteringConfig>,
    #[serde(rename = "api-server", skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiConfig>,
    /// gnmic's `processors` section as written (`null` when absent): compiled once at start
    /// by `gnomon_processors::Processors::from_config`, which names every bad field.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub processors: Value,
    /// gnmic's `loader`: where the leader discovers more targets (file, http, consul,
    /// docker); they become cluster state like the file's.
    #[serde(skip)]
    pub loader: Option<loader::LoaderConfig>,
    /// The loader's `on-add` / `on-delete` actions, resolved from the `actions` section.
    #[serde(skip)]
    pub loader_actions: loader::LoaderActions,
    /// gnmic's `gnmi-server`: the exporter serves the latest collected values over gNMI.
    #[serde(skip)]
    pub gnmi_server: Option<GnmiServerConfig>,
    /// What the load found worth a warning (keys read but not applied, unknown keys); the
    /// binary logs them at start.
    #[serde(skip)]
    pub warnings: Vec<ConfigWarning>,
}

/// Names gnmic looks for when no `--config` is given.
const DISCOVERY_NAMES: [&str; 4] = [".gnmic.yaml", ".gnmic.yml", ".gnmic.json", ".gnmic.toml"];

fn discover_config_file() -> Option<PathBuf> {
    let mut dirs = vec![PathBuf::from(".")];
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home));
    }
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME") {
        let xdg = PathBuf::from(xdg);
        dirs.push(xdg.join("gnmic"));
        dirs.insert(dirs.len() - 1, xdg);
    }
    dirs.iter()
        .flat_map(|d| DISCOVERY_NAMES.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("GNMIC_") || k.starts_with("GNOMON_"))
        .collect()
}

fn too_large(source_name: &str, size: u64) -> ConfigError {
    ConfigError::Parse {
        source_name: source_name.to_string(),
        reason: format!(
            "{size} bytes is larger than the {} MiB a configuration may have",
            MAX_DOCUMENT_SIZE >> 20
        ),
    }
}

/// Reads a configuration file, refusing one larger than [`MAX_DOCUMENT_SIZE`] before
/// reading it.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_error = |e: std::io::Error| ConfigError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    // One byte more than the limit tells a file that is too large (whatever its metadata
    // says: a pipe or /proc file has none).
    file.take(MAX_DOCUMENT_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(too_large(&path.display().to_string(), text.len() as u64));
    }
    Ok(text)
}

/// Loads the configuration from `path` (or gnmic's discovery locations when `None`; an
/// absent file then means an empty configuration), applying environment overrides.
pub fn load_config(path: Option<&Path>) -> Result<GnomonConfig, ConfigError> {
    let path = match path {
        Some(p) => Some(p.to_path_buf()),
        None => discover_config_file(),
    };
    let Some(path) = path else {
        return load_config_with_env("", ConfigFormat::Yaml, &env_vars());
    };
    let text = read_file(&path)?;
    let mut tree = parse_tree(
        &text,
        ConfigFormat::from_path(&path),
        &path.display().to_string(),
    )?;
    apply_env_overrides(&mut tree, &env_vars());
    from_tree(&tree)
}

/// Loads the configuration from text, applying the process's `GNMIC_*` / `GNOMON_*` variables.
pub fn load_config_from_str(text: &str, format: ConfigFormat) -> Result<GnomonConfig, ConfigError> {
    load_config_with_env(text, format, &env_vars())
}

/// Loads the configuration from text with an explicit list of environment variables.
pub fn load_config_with_env(
    text: &str,
    format: ConfigFormat,
    env: &[(String, String)],
) -> Result<GnomonConfig, ConfigError> {
    let mut tree = parse_tree(text, format, "configuration")?;
    apply_env_overrides(&mut tree, env);
    from_tree(&tree)
}

/// Parses configuration text into a JSON tree. YAML is read by [`yaml::parse`] (gnmic's merge
/// keys, bounded aliases) and handed to the `config` crate as JSON; JSON and TOML go to the
/// `config` crate directly.
pub fn parse_tree(
    text: &str,
    format: ConfigFormat,
    source_name: &str,
) -> Result<Value, ConfigError> {
    if text.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(too_large(source_name, text.len() as u64));
    }
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let parse_error = |reason: String| ConfigError::Parse {
        source_name: source_name.to_string(),
        reason: reason.replace('\n', " "),
    };
    let (text, format) = match format {
        ConfigFormat::Yaml => {
            let value = yaml::parse(text).map_err(parse_error)?;
            match value {
                Value::Null => return Ok(Value::Object(Default::default())),
                Value::Object(_) => {}
                other => {
                    return Err(parse_error(format!(
                        "the top level is {}, expected a map of settings",
                        reader::type_name(&other)
                    )))
                }
            }
            check_numbers(&value).map_err(parse_error)?;
            (value.to_string(), config::FileFormat::Json)
        }
        ConfigFormat::Json => {
            let value: Value =
                serde_json::from_str(text).map_err(|e| parse_error(e.to_string()))?;
            check_numbers(&value).map_err(parse_error)?;
            (text.to_string(), config::FileFormat::Json)
        }
        ConfigFormat::Toml => (text.to_string(), config::FileFormat::Toml),
    };
    let built = config::Config::builder()
        .add_source(config::File::from_str(&text, format))
        .build()
        .map_err(|e| parse_error(e.to_string()))?;
    let tree: Value = built
        .try_deserialize()
        .map_err(|e: config::ConfigError| parse_error(e.to_string()))?;
    match tree {
        Value::Object(_) => Ok(tree),
        Value::Null => Ok(Value::Object(Default::default())),
        other => Err(parse_error(format!(
            "the top level is {}, expected a map of settings",
            reader::type_name(&other)
        ))),
    }
}

/// Calls `each` with the name and block of every entry of the map section `key`
/// (`subscriptions`, `outputs`, `inputs`); an entry without a value reads as an empty block.
fn for_each_block(
    root: &Section<'_>,
    key: &str,
    kind: NameKind,
    mut each: impl FnMut(&str, &Section<'_>) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    let Some(section) = root.section(key)? else {
        return Ok(());
    };
    let empty = Value::Object(Default::default());
    for name in section.keys() {
        names::check(kind, &section.key_path(name), name)?;
        let value = section.raw(name).unwrap_or(&empty);
        let entry = Section::from_value(section.key_path(name), value)?;
        each(name, &entry)?;
    }
    Ok(())
}

/// gnmic sections gnomon does not implement.
const UNSUPPORTED_SECTIONS: [(&str, &str); 1] = [(
    "tunnel-server",
    "gnmic's gRPC tunnel server is not supported",
)];

/// Builds the typed configuration from a JSON tree (file after environment overrides):
/// expands `$VAR` where gnmic does, then reads every section. Warnings are returned in
/// [`GnomonConfig::warnings`].
pub fn from_tree(tree: &Value) -> Result<GnomonConfig, ConfigError> {
    let mut tree = tree.clone();
    expand::expand_tree(&mut tree)?;
    let (config, warnings) = warning::collect(|| read_tree(&tree));
    let mut config = config?;
    config.warnings = warnings;
    Ok(config)
}

fn read_tree(tree: &Value) -> Result<GnomonConfig, ConfigError> {
    let root = Section::from_value("", tree)?;
    let globals = GlobalConfig::from_section(&root)?;

    let mut subscriptions = BTreeMap::new();
    for_each_block(
        &root,
        "subscriptions",
        NameKind::Subscription,
        |name, entry| {
            let subscription = SubscriptionConfig::from_section(name, entry)?;
            subscriptions.insert(subscription.name.clone(), subscription);
            Ok(())
        },
    )?;

    let mut outputs = BTreeMap::new();
    for_each_block(&root, "outputs", NameKind::Output, |name, entry| {
        outputs.insert(name.to_string(), OutputConfig::from_section(name, entry)?);
        Ok(())
    })?;

    let mut inputs = BTreeMap::new();
    for_each_block(&root, "inputs", NameKind::Input, |name, entry| {
        inputs.insert(name.to_string(), InputConfig::from_section(name, entry)?);
        Ok(())
    })?;

    let mut targets = BTreeMap::new();
    match root.raw("targets") {
        None => {
            for address in &globals.address {
                let target = TargetConfig::from_address(address, &globals)?;
                targets.insert(target.name.clone(), target);
            }
        }
        // gnmic also takes a space-separated string of addresses.
        Some(Value::String(list)) => {
            for address in list.split_whitespace() {
                let target = TargetConfig::from_address(address, &globals)?;
                targets.insert(target.name.clone(), target);
            }
        }
        Some(Value::Object(map)) => {
            for (key, value) in map {
                names::check(NameKind::Target, &format!("targets.{key}"), key)?;
                let empty = Value::Object(Default::default());
                let value = if value.is_null() { &empty } else { value };
                let entry = Section::from_value(format!("targets.{key}"), value)?;
                let target = TargetConfig::from_section(Some(key), &entry, &globals)?;
                targets.insert(target.name.clone(), target);
            }
        }
        Some(other) => {
            return Err(ConfigError::invalid(
                "targets",
                other,
                "is not a map of targets",
            ))
        }
    }

    let clustering = match root.section("clustering")? {
        None => None,
        Some(section) => Some(ClusteringConfig::from_section(
            &section,
            &globals.cluster_name,
            globals.instance_name.as_deref(),
        )?),
    };
    let mut globals = globals;
    if let Some(clustering) = &clustering {
        // gnmic: the clustering names overwrite the global ones.
        globals.cluster_name = clustering.cluster_name.clone();
        globals.instance_name = Some(clustering.instance_name.clone());
    }
    let api = ApiConfig::from_root(&root)?;
    let processors = root.raw("processors").cloned().unwrap_or(Value::Null);

    // Targets a loader finds inherit the same globals as the file's targets.
    let loader = match root.section("loader")? {
        None => None,
        Some(section) => Some(loader::LoaderConfig::from_section(&section, &globals)?),
    };
    let actions = match root.section("actions")? {
        None => actions::ActionsConfig::default(),
        Some(section) => actions::ActionsConfig::from_section(&section)?,
    };
    let loader_actions = match &loader {
        Some(loader) => loader.resolve_actions(&actions)?,
        None => {
            if !actions.actions.is_empty() {
                warning::warn(
                    "actions",
                    "actions run only as a loader's on-add / on-delete; no loader is configured",
                );
            }
            loader::LoaderActions::default()
        }
    };
    let gnmi_server = match root.section("gnmi-server")? {
        None => None,
        Some(section) => Some(GnmiServerConfig::from_section(&section)?),
    };
    for (key, why) in UNSUPPORTED_SECTIONS {
        root.unsupported(key, why);
    }
    root.warn_unknown_keys();

    let config = GnomonConfig {
        globals,
        targets,
        subscriptions,
        outputs,
        inputs,
        clustering,
        api,
        processors,
        loader,
        loader_actions,
        gnmi_server,
        warnings: Vec::new(),
    };
    config.check_references()?;
    Ok(config)
}

impl GnomonConfig {
    /// Checks that every subscription and output a target or subscription names exists.
    pub fn check_references(&self) -> Result<(), ConfigError> {
        for target in self.targets.values() {
            self.check_target_references(target, &format!("targets.{}", target.name))?;
        }
        for subscription in self.subscriptions.values() {
            for output in &subscription.outputs {
                if !self.outputs.contains_key(output) {
                    return Err(self.unknown_output(
                        &format!("subscriptions.{}.outputs", subscription.name),
                        output,
                    ));
                }
            }
        }
        for (name, input) in &self.inputs {
            let nats = input.settings();
            for output in &nats.outputs {
                if !self.outputs.contains_key(output) {
                    return Err(self.unknown_output(&format!("inputs.{name}.outputs"), output));
                }
            }
        }
        Ok(())
    }

    /// Checks one target's subscription and output names (used for posted targets too).
    pub fn check_target_references(
        &self,
        target: &TargetConfig,
        key: &str,
    ) -> Result<(), ConfigError> {
        for name in &target.subscriptions {
            if !self.subscriptions.contains_key(name) {
                return Err(ConfigError::UnknownReference {
                    key: join_key(key, "subscriptions"),
                    name: name.clone(),
                    kind: "subscription",
                    known: known_list(self.subscriptions.keys()),
                });
            }
        }
        for output in &target.outputs {
            if !self.outputs.contains_key(output) {
                return Err(self.unknown_output(&join_key(key, "outputs"), output));
            }
        }
        Ok(())
    }

    fn unknown_output(&self, key: &str, name: &str) -> ConfigError {
        ConfigError::UnknownReference {
            key: key.to_string(),
            name: name.to_string(),
            kind: "output",
            known: known_list(self.outputs.keys()),
        }
    }

    /// The subscriptions `target` uses (all when it names none).
    pub fn subscriptions_for(&self, target: &TargetConfig) -> Vec<SubscriptionConfig> {
        if target.subscriptions.is_empty() {
            self.subscriptions.values().cloned().collect()
        } else {
            target
                .subscriptions
                .iter()
                .filter_map(|n| self.subscriptions.get(n).cloned())
                .collect()
        }
    }

    /// Parses a subscription posted as JSON (or read from the cluster store): `name` is
    /// required, durations as ns integers or strings, unknown keys refused, and the outputs
    /// it names must exist.
    pub fn subscription_from_json(&self, body: &Value) -> Result<SubscriptionConfig, ConfigError> {
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|name| !name.trim().is_empty())
            .ok_or_else(|| ConfigError::Missing {
                key: "name".into(),
                expected: "expected the subscription's name".into(),
            })?;
        let section = Section::strict("", body)?;
        let subscription = SubscriptionConfig::from_section(name, &section)?;
        let unknown = section.unknown_keys();
        if !unknown.is_empty() {
            return Err(ConfigError::Message(format!(
                "unknown subscription keys: {}",
                unknown.join(", ")
            )));
        }
        for output in &subscription.outputs {
            if !self.outputs.contains_key(output) {
                return Err(self.unknown_output("outputs", output));
            }
        }
        Ok(subscription)
    }

    /// Parses a target posted as JSON (durations as ns integers or strings) with this
    /// configuration's globals, and checks the names it refers to.
    /// A string field given another JSON type is refused (every such field is named).
    pub fn target_from_json(&self, body: &Value) -> Result<TargetConfig, ConfigError> {
        if let Value::Object(map) = body {
            let wrong: Vec<String> = STRING_TARGET_FIELDS
                .iter()
                .filter_map(|field| {
                    let value = map.get(*field)?;
                    (!value.is_string() && !value.is_null()).then(|| {
                        let shown = if secret::is_secret_key(field) {
                            REDACTED.to_string()
                        } else {
                            value.to_string()
                        };
                        format!("{field}: {shown} is {}", reader::type_name(value))
                    })
                })
                .collect();
            if !wrong.is_empty() {
                return Err(ConfigError::Message(format!(
                    "{} (expected a JSON string)",
                    wrong.join(", ")
                )));
            }
        }
        let section = Section::strict("", body)?;
        let target = TargetConfig::from_section(None, &section, &self.globals)?;
        self.check_target_references(&target, "")?;
        Ok(target)
    }
}

/// Fields of a posted target that must be JSON strings.
const STRING_TARGET_FIELDS: [&str; 12] = [
    "name",
    "address",
    "username",
    "password",
    "token",
    "auth-scheme",
    "tls-ca",
    "tls-cert",
    "tls-key",
    "tls-server-name",
    "encoding",
    "tls-version",
];

fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn known_list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_edge;

/// Every number must fit an integer or a finite float: the `config` crate's JSON reader
/// panics on one that does not (serde_json keeps such numbers as text when its
/// `arbitrary_precision` feature is on, which event-starlark's crate turns on).
fn check_numbers(value: &Value) -> Result<(), String> {
    match value {
        Value::Number(n) => {
            let fits = n.is_i64() || n.is_u64() || n.as_f64().is_some_and(f64::is_finite);
            if fits {
                Ok(())
            } else {
                Err(format!("the number {n} is out of range"))
            }
        }
        Value::Array(items) => items.iter().try_for_each(check_numbers),
        Value::Object(map) => map.values().try_for_each(check_numbers),
        _ => Ok(()),
    }
}
