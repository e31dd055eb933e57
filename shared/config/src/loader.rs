//! gnmic's `loader` section: where targets are discovered (a file, an HTTP endpoint, Consul
//! services, Docker containers), how often, and which actions run when a target appears or
//! goes away.
//!
//! Why this shape: one [`LoaderConfig`] with the settings every type shares (interval,
//! start-delay, metrics, actions, vars) and one [`LoaderKind`] variant per type, so the
//! loaders crate matches on a closed set and cannot forget a type. Each key gnmic defines is
//! either applied or refused/warned about by name here, at start; per-target `config` blocks
//! are checked now with the same rules as `targets` (so a typo is reported once, at start,
//! not at every discovery). The globals are kept with the loader because every discovered
//! target is built over them, exactly like a target of the file.

use super::actions::{ActionConfig, ActionKind, ActionsConfig};
use super::gotemplate::GoTemplate;
use super::reader::Section;
use super::secret::Secret;
use super::{warning, ConfigError, GlobalConfig, TargetConfig};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// gnmic's defaults, per loader type.
pub const FILE_DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const HTTP_DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
pub const HTTP_DEFAULT_TIMEOUT: Duration = Duration::from_secs(50);
pub const DOCKER_DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const CONSUL_DEFAULT_ADDRESS: &str = "localhost:8500";
pub const CONSUL_DEFAULT_DATACENTER: &str = "dc1";
/// gnmic's Consul watch: a blocking query waits up to one minute.
pub const CONSUL_WATCH_WAIT: Duration = Duration::from_secs(60);
/// Timeout of a Consul call that does not block.
pub const CONSUL_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONSUL_DEFAULT_ACTIONS_TIMEOUT: Duration = Duration::from_secs(30);
/// The Docker daemon gnmic uses when `address` is empty and `DOCKER_HOST` is unset.
pub const DOCKER_DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The container filters Docker's `GET /containers/json` accepts.
const DOCKER_CONTAINER_FILTERS: [&str; 15] = [
    "ancestor",
    "before",
    "expose",
    "exited",
    "health",
    "id",
    "isolation",
    "is-task",
    "label",
    "name",
    "network",
    "publish",
    "since",
    "status",
    "volume",
];
/// The network filters Docker's `GET /networks` accepts.
const DOCKER_NETWORK_FILTERS: [&str; 7] =
    ["dangling", "driver", "id", "label", "name", "scope", "type"];

/// The `loader` section.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    pub kind: LoaderKind,
    /// Time between two reads (file, http, docker); Consul's longest blocking wait.
    pub interval: Duration,
    /// Wait before the first read.
    pub start_delay: Duration,
    /// Timeout of one read (file: half the interval, as gnmic; http: `timeout`; docker:
    /// `timeout` or half the interval; consul: per call, plus the blocking wait).
    pub timeout: Duration,
    /// gnmic's `enable-metrics`: the loader's metrics are recorded.
    pub enable_metrics: bool,
    /// gnmic's `debug`: each read and diff is logged at info level instead of debug.
    pub debug: bool,
    /// gnmic's `expand-env`: `$VAR` in discovered targets is expanded where gnmic expands it
    /// in the `targets` section.
    pub expand_env: bool,
    /// Action names run in order for each added target.
    pub on_add: Vec<String>,
    /// Action names run in order for each removed target.
    pub on_delete: Vec<String>,
    /// `vars`, given to actions as `.Vars` (over the content of `vars-file`).
    pub vars: Map<String, Value>,
    /// `vars-file`: YAML or JSON map read when the actions are set up.
    pub vars_file: Option<PathBuf>,
    /// Longest time the actions of one read may take together.
    pub actions_timeout: Duration,
    /// The globals discovered targets inherit.
    pub globals: GlobalConfig,
}

/// The loader type and its own settings.
#[derive(Clone, Debug, PartialEq)]
pub enum LoaderKind {
    File(FileLoaderConfig),
    Http(HttpLoaderConfig),
    Consul(ConsulLoaderConfig),
    Docker(DockerLoaderConfig),
}

impl LoaderKind {
    /// gnmic's type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Http(_) => "http",
            Self::Consul(_) => "consul",
            Self::Docker(_) => "docker",
        }
    }
}

/// Where the file loader reads.
#[derive(Clone, Debug, PartialEq)]
pub enum FileSource {
    Local(PathBuf),
    /// An `http://` or `https://` URL.
    Url(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct FileLoaderConfig {
    pub source: FileSource,
}

/// Client TLS of the http loader (gnmic's `tls` block).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LoaderTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub skip_verify: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpLoaderConfig {
    pub url: String,
    pub tls: Option<LoaderTls>,
    /// Basic authentication, sent only when both are set (as gnmic).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Sent as `Authorization: <auth-scheme> <token>`.
    pub token: Option<Secret>,
    /// Default `Bearer`.
    pub auth_scheme: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConsulLoaderConfig {
    /// `host:port` or an `http(s)://` URL.
    pub address: String,
    pub datacenter: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub services: Vec<ConsulServiceConfig>,
}

/// One watched Consul service.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsulServiceConfig {
    pub name: String,
    /// Every tag must be on an instance.
    pub tags: Vec<String>,
    /// The target config applied to each instance (without `name` and `event-tags`).
    pub config: Map<String, Value>,
    /// `config.name`: the target name as a template over the Consul service (`.ID`,
    /// `.Service`, `.Tags`, `.Address`, `.Port`, `.Meta`); the service ID without it.
    pub name_template: Option<GoTemplate>,
    /// `config.event-tags`: each value a template over the Consul service.
    pub event_tag_templates: BTreeMap<String, GoTemplate>,
}

/// The Docker daemon to ask.
#[derive(Clone, Debug, PartialEq)]
pub enum DockerAddress {
    /// `address` empty: `DOCKER_HOST` when it is set, else the local socket.
    Default,
    /// `unix:///path`.
    Unix(PathBuf),
    /// `tcp://host:port` or `http://host:port`, as `host:port`.
    Tcp(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct DockerLoaderConfig {
    pub address: DockerAddress,
    pub filters: Vec<DockerFilter>,
}

/// The gNMI port of discovered containers.
#[derive(Clone, Debug, PartialEq)]
pub enum DockerPort {
    Number(u16),
    /// `label=<name>`: the value of that container label.
    Label(String),
}

/// One entry of `filters`.
#[derive(Clone, Debug, PartialEq)]
pub struct DockerFilter {
    /// Each map is one container query (`status=running` added), results merged.
    pub containers: Vec<BTreeMap<String, String>>,
    /// The network query selecting the network the address is taken from.
    pub network: BTreeMap<String, String>,
    pub port: Option<DockerPort>,
    /// Target config for the containers this filter finds (no `name`, `address`).
    pub config: Map<String, Value>,
}

fn required_string(section: &Section<'_>, key: &str, what: &str) -> Result<String, ConfigError> {
    section
        .non_empty_string(key, what)?
        .ok_or_else(|| ConfigError::Missing {
            key: section.key_path(key),
            expected: format!("expected {what}"),
        })
}

fn refuse(section: &Section<'_>, key: &str, why: &str) -> Result<(), ConfigError> {
    match section.raw(key) {
        Some(value) if value.as_str() != Some("") => Err(ConfigError::invalid(
            section.key_path(key),
            value,
            format!("is not supported by gnomon: {why}"),
        )),
        _ => Ok(()),
    }
}

/// A map of settings at `key` (absent: empty).
fn object(section: &Section<'_>, key: &str) -> Result<Map<String, Value>, ConfigError> {
    match section.raw(key) {
        None => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(other) => Err(ConfigError::invalid(
            section.key_path(key),
            other,
            "is not a map of settings",
        )),
    }
}

/// Checks a per-target `config` block with the rules of the `targets` section; warnings
/// (unknown keys) name the block's keys. `placeholder` stands in for the discovered address.
fn check_target_block(
    path: &str,
    block: &Map<String, Value>,
    globals: &GlobalConfig,
) -> Result<(), ConfigError> {
    let mut block = block.clone();
    block
        .entry("address")
        .or_insert_with(|| Value::String("127.0.0.1:57400".into()));
    block.remove("name");
    let value = Value::Object(block);
    let section = Section::from_value(path, &value)?;
    TargetConfig::from_section(Some("discovered"), &section, globals).map(|_| ())
}

/// Splits a `list` of maps at `key` into sections.
fn list_of_maps<'a>(
    section: &Section<'a>,
    key: &str,
) -> Result<Vec<(String, &'a Value)>, ConfigError> {
    match section.raw(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("{}[{i}]", section.key_path(key)), item))
            .collect()),
        Some(other) => Err(ConfigError::invalid(
            section.key_path(key),
            other,
            "is not a list",
        )),
    }
}

impl FileLoaderConfig {
    fn from_section(section: &Section<'_>) -> Result<Self, ConfigError> {
        let path = required_string(section, "path", "the targets file path or http(s) URL")?;
        let source = if path.starts_with("http://") || path.starts_with("https://") {
            FileSource::Url(path)
        } else if path.starts_with("ftp://") || path.starts_with("sftp://") {
            return Err(ConfigError::invalid(
                section.key_path("path"),
                &Value::String(path),
                "is not supported by gnomon: remote files are read over http(s) only",
            ));
        } else {
            FileSource::Local(PathBuf::from(path))
        };
        refuse(
            section,
            "template",
            "the loaded file must already be gnmic's targets map",
        )?;
        Ok(Self { source })
    }
}

impl HttpLoaderConfig {
    fn from_section(section: &Section<'_>) -> Result<Self, ConfigError> {
        let url = required_string(section, "url", "the http(s) URL of the targets")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                section.key_path("url"),
                &Value::String(url),
                "is not an http(s) URL",
            ));
        }
        let tls = match section.section("tls")? {
            None => None,
            Some(block) => {
                let tls = LoaderTls {
                    ca_file: block.path_if_set("ca-file")?,
                    cert_file: block.path_if_set("cert-file")?,
                    key_file: block.path_if_set("key-file")?,
                    skip_verify: block.bool("skip-verify")?.unwrap_or(false),
                };
                if tls.cert_file.is_some() != tls.key_file.is_some() {
                    let missing = if tls.cert_file.is_some() {
                        "key-file"
                    } else {
                        "cert-file"
                    };
                    return Err(ConfigError::Missing {
                        key: block.key_path(missing),
                        expected: "cert-file and key-file go together".into(),
                    });
                }
                block.warn_unknown_keys();
                Some(tls)
            }
        };
        for key in ["template", "template-file"] {
            refuse(
                section,
                key,
                "the endpoint must answer gnmic's targets map as JSON",
            )?;
        }
        Ok(Self {
            url,
            tls,
            username: section.string_if_set("username")?,
            password: section.string_if_set("password")?.map(Secret::new),
            token: section.string_if_set("token")?.map(Secret::new),
            auth_scheme: section
                .string_if_set("auth-scheme")?
                .unwrap_or_else(|| "Bearer".to_string()),
        })
    }
}

impl ConsulServiceConfig {
    fn from_value(path: &str, value: &Value, globals: &GlobalConfig) -> Result<Self, ConfigError> {
        let section = Section::from_value(path, value)?;
        let name = required_string(&section, "name", "the Consul service name")?;
        let tags = section.string_list("tags")?;
        let mut config = object(&section, "config")?;
        let config_path = section.key_path("config");
        let name_template = match config.remove("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(GoTemplate::parse(&text).map_err(|why| {
                ConfigError::invalid(format!("{config_path}.name"), &Value::String(text), why)
            })?),
            Some(other) => {
                return Err(ConfigError::invalid(
                    format!("{config_path}.name"),
                    &other,
                    "is not a string",
                ))
            }
        };
        let mut event_tag_templates = BTreeMap::new();
        match config.remove("event-tags") {
            None | Some(Value::Null) => {}
            Some(Value::Object(tags)) => {
                for (tag, template) in tags {
                    let key = format!("{config_path}.event-tags.{tag}");
                    let text = match template {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => return Err(ConfigError::invalid(key, &other, "is not a string")),
                    };
                    let parsed = GoTemplate::parse(&text)
                        .map_err(|why| ConfigError::invalid(&key, &Value::String(text), why))?;
                    event_tag_templates.insert(tag, parsed);
                }
            }
            Some(other) => {
                return Err(ConfigError::invalid(
                    format!("{config_path}.event-tags"),
                    &other,
                    "is not a map of strings",
                ))
            }
        }
        if config.contains_key("address") {
            warning::warn(
                format!("{config_path}.address"),
                "ignored: the address is the registered service address and port",
            );
            config.remove("address");
        }
        check_target_block(&config_path, &config, globals)?;
        section.warn_unknown_keys();
        Ok(Self {
            name,
            tags,
            config,
            name_template,
            event_tag_templates,
        })
    }
}

impl ConsulLoaderConfig {
    fn from_section(section: &Section<'_>, globals: &GlobalConfig) -> Result<Self, ConfigError> {
        let services = list_of_maps(section, "services")?
            .into_iter()
            .map(|(path, value)| ConsulServiceConfig::from_value(&path, value, globals))
            .collect::<Result<Vec<_>, _>>()?;
        if services.is_empty() {
            return Err(ConfigError::Missing {
                key: section.key_path("services"),
                expected: "gnomon's consul loader watches services; gnmic's key-prefix (KV) \
                           mode is not supported"
                    .into(),
            });
        }
        section.unsupported(
            "key-prefix",
            "targets come from the services; the KV prefix is not read",
        );
        Ok(Self {
            address: section
                .string_if_set("address")?
                .unwrap_or_else(|| CONSUL_DEFAULT_ADDRESS.to_string()),
            datacenter: section
                .string_if_set("datacenter")?
                .unwrap_or_else(|| CONSUL_DEFAULT_DATACENTER.to_string()),
            username: section.string_if_set("username")?,
            password: section.string_if_set("password")?.map(Secret::new),
            token: section.string_if_set("token")?.map(Secret::new),
            services,
        })
    }
}

fn docker_address(section: &Section<'_>) -> Result<DockerAddress, ConfigError> {
    let Some(text) = section.string_if_set("address")? else {
        return Ok(DockerAddress::Default);
    };
    if let Some(path) = text.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(ConfigError::invalid(
                section.key_path("address"),
                &Value::String(text),
                "names no socket path (expected unix:///path/to/docker.sock)",
            ));
        }
        return Ok(DockerAddress::Unix(PathBuf::from(path)));
    }
    let host_port = text
        .strip_prefix("tcp://")
        .or_else(|| text.strip_prefix("http://"))
        .map(|s| s.trim_end_matches('/'));
    match host_port {
        Some(hp) if super::check_host_port("address", hp, false, false).is_ok() => {
            Ok(DockerAddress::Tcp(hp.to_string()))
        }
        _ => Err(ConfigError::invalid(
            section.key_path("address"),
            &Value::String(text),
            "is not a Docker daemon address (expected unix:///path, tcp://host:port or \
             http://host:port; https is not supported)",
        )),
    }
}

fn string_map_checked(
    value: &Value,
    path: &str,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let Value::Object(map) = value else {
        return Err(ConfigError::invalid(path, value, "is not a map of filters"));
    };
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ConfigError::invalid(
                    format!("{path}.{key}"),
                    other,
                    "is not a string",
                ))
            }
        };
        // gnmic: a key `label=a` with value `b` is the filter `label=a=b`.
        let name = key.split('=').next().unwrap_or(key);
        if !allowed.contains(&name) {
            return Err(ConfigError::invalid(
                format!("{path}.{key}"),
                &Value::String(text),
                format!(
                    "is not a Docker filter (expected one of {})",
                    allowed.join(", ")
                ),
            ));
        }
        out.insert(key.clone(), text);
    }
    Ok(out)
}

impl DockerFilter {
    fn from_value(path: &str, value: &Value, globals: &GlobalConfig) -> Result<Self, ConfigError> {
        let section = Section::from_value(path, value)?;
        let containers = list_of_maps(&section, "containers")?
            .into_iter()
            .map(|(p, v)| string_map_checked(v, &p, &DOCKER_CONTAINER_FILTERS))
            .collect::<Result<Vec<_>, _>>()?;
        let network = match section.raw("network") {
            None => BTreeMap::new(),
            Some(v) => {
                string_map_checked(v, &section.key_path("network"), &DOCKER_NETWORK_FILTERS)?
            }
        };
        let port = match section.string_if_set("port")? {
            None => None,
            Some(text) => match text.strip_prefix("label=") {
                Some(label) if !label.is_empty() => Some(DockerPort::Label(label.to_string())),
                _ => match text.trim().parse::<u16>() {
                    Ok(p) if p > 0 => Some(DockerPort::Number(p)),
                    _ => {
                        return Err(ConfigError::invalid(
                            section.key_path("port"),
                            &Value::String(text),
                            "is not a port (expected a number 1-65535 or label=<name>)",
                        ))
                    }
                },
            },
        };
        let mut config = object(&section, "config")?;
        let config_path = section.key_path("config");
        for key in ["name", "address"] {
            if config.remove(key).is_some() {
                warning::warn(
                    format!("{config_path}.{key}"),
                    "ignored: the loader sets it from the container",
                );
            }
        }
        check_target_block(&config_path, &config, globals)?;
        section.warn_unknown_keys();
        Ok(Self {
            containers: if containers.is_empty() {
                vec![BTreeMap::new()]
            } else {
                containers
            },
            network,
            port,
            config,
        })
    }
}

impl DockerLoaderConfig {
    fn from_section(section: &Section<'_>, globals: &GlobalConfig) -> Result<Self, ConfigError> {
        let mut filters = list_of_maps(section, "filters")?
            .into_iter()
            .map(|(path, value)| DockerFilter::from_value(&path, value, globals))
            .collect::<Result<Vec<_>, _>>()?;
        if filters.is_empty() {
            // gnmic: every running container.
            filters.push(DockerFilter {
                containers: vec![BTreeMap::new()],
                network: BTreeMap::new(),
                port: None,
                config: Map::new(),
            });
        }
        Ok(Self {
            address: docker_address(section)?,
            filters,
        })
    }
}

impl LoaderConfig {
    /// Reads the `loader` section. `globals` are the top-level settings discovered targets
    /// inherit. Warnings (unknown keys, keys gnomon ignores) go to the current
    /// [`warning::collect`].
    pub fn from_section(
        section: &Section<'_>,
        globals: &GlobalConfig,
    ) -> Result<LoaderConfig, ConfigError> {
        let type_name = required_string(
            section,
            "type",
            "the loader type (file, http, consul or docker)",
        )?;
        let kind = match type_name.as_str() {
            "file" => LoaderKind::File(FileLoaderConfig::from_section(section)?),
            "http" => LoaderKind::Http(HttpLoaderConfig::from_section(section)?),
            "consul" => LoaderKind::Consul(ConsulLoaderConfig::from_section(section, globals)?),
            "docker" => LoaderKind::Docker(DockerLoaderConfig::from_section(section, globals)?),
            _ => {
                return Err(ConfigError::invalid(
                    section.key_path("type"),
                    &Value::String(type_name),
                    "is not a loader type (expected file, http, consul or docker)",
                ))
            }
        };
        let (interval, timeout) = match &kind {
            LoaderKind::File(_) => {
                let interval = positive(section.duration("interval")?, FILE_DEFAULT_INTERVAL);
                (interval, interval / 2)
            }
            LoaderKind::Http(_) => (
                positive(section.duration("interval")?, HTTP_DEFAULT_INTERVAL),
                positive(section.duration("timeout")?, HTTP_DEFAULT_TIMEOUT),
            ),
            LoaderKind::Docker(_) => {
                let interval = positive(section.duration("interval")?, DOCKER_DEFAULT_INTERVAL);
                let timeout = section
                    .duration("timeout")?
                    .filter(|t| !t.is_zero() && *t < interval)
                    .unwrap_or(interval / 2);
                (interval, timeout)
            }
            LoaderKind::Consul(_) => (CONSUL_WATCH_WAIT, CONSUL_REQUEST_TIMEOUT),
        };
        let actions_timeout = match &kind {
            LoaderKind::Consul(_) => positive(
                section.duration("actions-timeout")?,
                CONSUL_DEFAULT_ACTIONS_TIMEOUT,
            ),
            _ => interval,
        };
        let vars = object(section, "vars")?;
        let config = LoaderConfig {
            interval,
            start_delay: section.duration("start-delay")?.unwrap_or(Duration::ZERO),
            timeout,
            enable_metrics: section.bool("enable-metrics")?.unwrap_or(false),
            debug: section.bool("debug")?.unwrap_or(false),
            expand_env: section.bool("expand-env")?.unwrap_or(false),
            on_add: section.string_list("on-add")?,
            on_delete: section.string_list("on-delete")?,
            vars,
            vars_file: section.path_if_set("vars-file")?,
            actions_timeout,
            globals: globals.clone(),
            kind,
        };
        section.warn_unknown_keys();
        Ok(config)
    }

    /// gnmic's type name.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// The actions `on-add` and `on-delete` name, from the `actions` section: a name that
    /// is not defined, or an action of a type gnomon does not run, is refused naming it.
    pub fn resolve_actions(&self, actions: &ActionsConfig) -> Result<LoaderActions, ConfigError> {
        let resolve =
            |key: &str, names: &[String]| -> Result<Vec<ActionConfig>, ConfigError> {
                names
                    .iter()
                    .map(|name| {
                        let action = actions.actions.get(name).ok_or_else(|| {
                            ConfigError::UnknownReference {
                                key: format!("loader.{key}"),
                                name: name.clone(),
                                kind: "action",
                                known: if actions.actions.is_empty() {
                                    "none".into()
                                } else {
                                    actions
                                        .actions
                                        .keys()
                                        .cloned()
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                },
                            }
                        })?;
                        if let ActionKind::Unsupported { type_name } = &action.kind {
                            return Err(ConfigError::Message(format!(
                            "loader.{key}: action {name:?} has type {type_name:?}, which gnomon \
                             does not support (only http actions run on target discovery)"
                        )));
                        }
                        Ok(action.clone())
                    })
                    .collect()
            };
        Ok(LoaderActions {
            on_add: resolve("on-add", &self.on_add)?,
            on_delete: resolve("on-delete", &self.on_delete)?,
        })
    }
}

/// The resolved `on-add` / `on-delete` actions, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoaderActions {
    pub on_add: Vec<ActionConfig>,
    pub on_delete: Vec<ActionConfig>,
}

impl LoaderActions {
    pub fn is_empty(&self) -> bool {
        self.on_add.is_empty() && self.on_delete.is_empty()
    }
}

fn positive(value: Option<Duration>, default: Duration) -> Duration {
    value.filter(|d| !d.is_zero()).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::ActionsConfig;
    use serde_json::json;

    fn read(value: Value) -> (Result<LoaderConfig, ConfigError>, Vec<String>) {
        let (result, warnings) = warning::collect(|| {
            let section = Section::from_value("loader", &value)?;
            LoaderConfig::from_section(&section, &GlobalConfig::default())
        });
        (result, warnings.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn gnmic_defaults_per_type() {
        let s = Duration::from_secs;
        for (value, interval, timeout) in [
            (json!({"type": "file", "path": "t.yaml"}), s(30), s(15)),
            (
                json!({"type": "file", "path": "t.yaml", "interval": "10s"}),
                s(10),
                s(5),
            ),
            (json!({"type": "http", "url": "http://h/t"}), s(60), s(50)),
            (json!({"type": "docker"}), s(30), s(15)),
            (
                json!({"type": "docker", "interval": "10s", "timeout": "20s"}),
                s(10),
                s(5),
            ),
            (json!({"type": "docker", "timeout": "2s"}), s(30), s(2)),
            (
                json!({"type": "consul", "services": [{"name": "gnmi"}]}),
                s(60),
                s(10),
            ),
        ] {
            let (config, warnings) = read(value.clone());
            let config = config.unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(
                (config.interval, config.timeout),
                (interval, timeout),
                "{value}"
            );
            assert!(warnings.is_empty(), "{value}: {warnings:?}");
            assert_eq!(config.start_delay, Duration::ZERO);
            assert!(!config.enable_metrics);
        }
    }

    #[test]
    fn common_keys_are_applied() {
        let (config, warnings) = read(json!({
            "type": "file", "path": "https://h/targets.yaml", "start-delay": "2s",
            "enable-metrics": true, "debug": true, "expand-env": true,
            "on-add": ["a1", "a2"], "on-delete": ["d1"], "vars": {"site": "dub"},
            "vars-file": "vars.yaml", "typo": 1,
        }));
        let config = config.unwrap();
        assert_eq!(
            config.kind,
            LoaderKind::File(FileLoaderConfig {
                source: FileSource::Url("https://h/targets.yaml".into())
            })
        );
        assert_eq!(config.start_delay, Duration::from_secs(2));
        assert!(config.enable_metrics && config.debug && config.expand_env);
        assert_eq!(config.on_add, ["a1", "a2"]);
        assert_eq!(config.on_delete, ["d1"]);
        assert_eq!(config.vars["site"], "dub");
        assert_eq!(config.vars_file, Some(PathBuf::from("vars.yaml")));
        assert_eq!(
            warnings,
            ["loader.typo: unknown configuration key; ignored"]
        );
    }

    #[test]
    fn http_loader_keys() {
        let (config, _) = read(json!({
            "type": "http", "url": "https://h/targets", "timeout": "3s",
            "tls": {"ca-file": "ca.pem", "skip-verify": true},
            "username": "u", "password": "p", "token": "t", "auth-scheme": "Token",
        }));
        let LoaderKind::Http(http) = config.unwrap().kind else {
            panic!("not http")
        };
        assert_eq!(http.tls.as_ref().unwrap().ca_file, Some("ca.pem".into()));
        assert!(http.tls.unwrap().skip_verify);
        assert_eq!(http.password.unwrap().expose(), "p");
        assert_eq!(http.token.unwrap().expose(), "t");
        assert_eq!(http.auth_scheme, "Token");
        assert_eq!(format!("{:?}", http.username), "Some(\"u\")");
    }

    #[test]
    fn consul_services_and_templates() {
        let (config, warnings) = read(json!({
            "type": "consul", "address": "127.0.0.1:8500", "datacenter": "dc2",
            "token": "secret-token", "key-prefix": "gnmic/config/targets",
            "services": [{
                "name": "gnmi", "tags": ["site=dub"],
                "config": {"name": "{{ .Meta.host }}", "insecure": true,
                           "event-tags": {"site": "{{ index .Meta \"site\" }}"}, "bogus": 1},
            }],
        }));
        let LoaderKind::Consul(consul) = config.unwrap().kind else {
            panic!("not consul")
        };
        assert_eq!(consul.datacenter, "dc2");
        assert_eq!(consul.services[0].tags, ["site=dub"]);
        assert_eq!(
            consul.services[0].name_template.as_ref().unwrap().source(),
            "{{ .Meta.host }}"
        );
        assert!(consul.services[0].event_tag_templates.contains_key("site"));
        assert!(!consul.services[0].config.contains_key("name"));
        assert!(!format!("{consul:?}").contains("secret-token"));
        assert_eq!(
            warnings,
            [
                "loader.services[0].config.bogus: unknown configuration key; ignored",
                "loader.key-prefix: not supported by gnomon: targets come from the services; the KV prefix is not read"
            ]
        );
    }

    #[test]
    fn docker_filters() {
        let (config, warnings) = read(json!({
            "type": "docker", "address": "unix:///run/d.sock",
            "filters": [
                {"containers": [{"label": "clab-node-kind=srl"}], "network": {"label": "containerlab"},
                 "port": "57400", "config": {"username": "admin", "name": "x"}},
                {"port": "label=gnmi-port"},
            ],
        }));
        let LoaderKind::Docker(docker) = config.unwrap().kind else {
            panic!("not docker")
        };
        assert_eq!(docker.address, DockerAddress::Unix("/run/d.sock".into()));
        assert_eq!(docker.filters[0].port, Some(DockerPort::Number(57400)));
        assert_eq!(
            docker.filters[0].containers[0]["label"],
            "clab-node-kind=srl"
        );
        assert_eq!(docker.filters[0].network["label"], "containerlab");
        assert_eq!(
            docker.filters[1].port,
            Some(DockerPort::Label("gnmi-port".into()))
        );
        assert_eq!(docker.filters[1].containers, vec![BTreeMap::new()]);
        assert_eq!(
            warnings,
            ["loader.filters[0].config.name: ignored: the loader sets it from the container"]
        );
        let (config, _) = read(json!({"type": "docker", "address": "tcp://10.0.0.1:2375"}));
        let LoaderKind::Docker(docker) = config.unwrap().kind else {
            panic!("not docker")
        };
        assert_eq!(docker.address, DockerAddress::Tcp("10.0.0.1:2375".into()));
    }

    #[test]
    fn errors_name_the_key_and_value() {
        for (value, expected) in [
            (json!({}), "loader.type: missing"),
            (
                json!({"type": "kafka"}),
                "loader.type: \"kafka\" is not a loader type",
            ),
            (json!({"type": "file"}), "loader.path: missing"),
            (
                json!({"type": "file", "path": "sftp://u@h/t.yaml"}),
                "loader.path: \"sftp://u@h/t.yaml\" is not supported",
            ),
            (
                json!({"type": "file", "path": "t", "template": "{{ . }}"}),
                "loader.template: \"{{ . }}\" is not supported",
            ),
            (
                json!({"type": "file", "path": "t", "interval": "often"}),
                "loader.interval: \"often\" is not a duration",
            ),
            (
                json!({"type": "http", "url": "h/t"}),
                "loader.url: \"h/t\" is not an http(s) URL",
            ),
            (
                json!({"type": "http", "url": "http://h", "tls": {"cert-file": "c"}}),
                "loader.tls.key-file: missing",
            ),
            (
                json!({"type": "http", "url": "http://h", "password": 5, "tls": 1}),
                "loader.tls: 1 is not a map",
            ),
            (json!({"type": "consul"}), "loader.services: missing"),
            (
                json!({"type": "consul", "services": [{"tags": ["a"]}]}),
                "loader.services[0].name: missing",
            ),
            (
                json!({"type": "consul", "services": [{"name": "s", "config": {"name": "{{ if .ID }}"}}]}),
                "loader.services[0].config.name: \"{{ if .ID }}\"",
            ),
            (
                json!({"type": "consul", "services": [{"name": "s", "config": {"timeout": "x"}}]}),
                "loader.services[0].config.timeout: \"x\" is not a duration",
            ),
            (
                json!({"type": "docker", "address": "ssh://h"}),
                "loader.address: \"ssh://h\" is not a Docker daemon address",
            ),
            (
                json!({"type": "docker", "filters": [{"containers": [{"colour": "red"}]}]}),
                "loader.filters[0].containers[0].colour: \"red\" is not a Docker filter",
            ),
            (
                json!({"type": "docker", "filters": [{"network": {"labels": "x"}}]}),
                "loader.filters[0].network.labels: \"x\" is not a Docker filter",
            ),
            (
                json!({"type": "docker", "filters": [{"port": "http"}]}),
                "loader.filters[0].port: \"http\" is not a port",
            ),
            (
                json!({"type": "docker", "filters": {"port": 1}}),
                "loader.filters: {\"port\":1} is not a list",
            ),
        ] {
            let error = read(value.clone()).0.unwrap_err().to_string();
            assert!(error.starts_with(expected), "{value}: {error}");
        }
    }

    #[test]
    fn actions_are_resolved_by_name_and_type() {
        let actions_value = json!({
            "notify": {"type": "http", "url": "http://127.0.0.1:1/"},
            "configure": {"type": "gnmi", "rpc": "set"},
        });
        let section = Section::from_value("actions", &actions_value).unwrap();
        let actions = ActionsConfig::from_section(&section).unwrap();
        let config = |on_add: Value| {
            read(json!({"type": "file", "path": "t", "on-add": on_add, "on-delete": ["notify"]}))
                .0
                .unwrap()
        };
        let resolved = config(json!(["notify"])).resolve_actions(&actions).unwrap();
        assert_eq!(resolved.on_add[0].name, "notify");
        assert_eq!(resolved.on_delete.len(), 1);
        let error = config(json!(["configure"]))
            .resolve_actions(&actions)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"configure\" has type \"gnmi\", which gnomon does not support"),
            "{error}"
        );
        let error = config(json!(["nope"]))
            .resolve_actions(&actions)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "loader.on-add: \"nope\" is not a defined action (defined: configure, notify)"
        );
    }
}
