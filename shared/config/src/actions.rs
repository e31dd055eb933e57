//! gnmic's `actions` section, for the actions a target loader runs on `on-add` / `on-delete`.
//!
//! Only gnmic's `http` action is implemented (method, url and body as Go templates from the
//! [`gotemplate`](super::gotemplate) subset, headers, timeout). Other types (`gnmi`,
//! `template`, `script`) are kept as [`ActionKind::Unsupported`]: the section as a whole still
//! loads (processors may name those actions), and a loader that names one is refused by
//! [`super::loader::LoaderConfig::resolve_actions`] with the action and its type.

use super::gotemplate::GoTemplate;
use super::reader::Section;
use super::ConfigError;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// gnmic's default timeout of an http action.
pub const DEFAULT_HTTP_ACTION_TIMEOUT: Duration = Duration::from_secs(5);
/// gnmic's default body of an http action: the whole action context as JSON.
pub const DEFAULT_HTTP_ACTION_BODY: &str = "{{ json . }}";
/// The methods gnmic allows.
const METHODS: [&str; 8] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT",
];

/// The `actions` section: action name → definition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActionsConfig {
    pub actions: BTreeMap<String, ActionConfig>,
}

/// One action.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionConfig {
    /// Its `name` (the map key when unset): the key of its result in `.Env`.
    pub name: String,
    pub kind: ActionKind,
}

/// What an action does.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionKind {
    Http(HttpActionConfig),
    /// A gnmic action type gnomon does not run (`gnmi`, `template`, `script`, …).
    Unsupported {
        type_name: String,
    },
}

/// gnmic's `http` action.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpActionConfig {
    /// Upper-case HTTP method (default GET).
    pub method: String,
    /// The URL, a template rendered per call.
    pub url: GoTemplate,
    pub headers: BTreeMap<String, String>,
    /// Timeout of the whole call (default 5 s).
    pub timeout: Duration,
    /// The body template (default `{{ json . }}`).
    pub body: GoTemplate,
    /// Logs each request and its result.
    pub debug: bool,
}

fn template(section: &Section<'_>, key: &str, text: &str) -> Result<GoTemplate, ConfigError> {
    GoTemplate::parse(text).map_err(|why| {
        ConfigError::invalid(section.key_path(key), &Value::String(text.into()), why)
    })
}

impl HttpActionConfig {
    fn from_section(section: &Section<'_>) -> Result<Self, ConfigError> {
        let method = section
            .string_if_set("method")?
            .unwrap_or_else(|| "GET".to_string())
            .to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Err(ConfigError::invalid(
                section.key_path("method"),
                &Value::String(method),
                format!(
                    "is not an HTTP method (expected one of {})",
                    METHODS.join(", ")
                ),
            ));
        }
        let url_text =
            section
                .non_empty_string("url", "a URL")?
                .ok_or_else(|| ConfigError::Missing {
                    key: section.key_path("url"),
                    expected: "expected the http(s) URL to call".into(),
                })?;
        let url = template(section, "url", &url_text)?;
        if url.is_literal()
            && !(url_text.starts_with("http://") || url_text.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                section.key_path("url"),
                &Value::String(url_text),
                "is not an http(s) URL",
            ));
        }
        let body_text = section
            .string_if_set("body")?
            .unwrap_or_else(|| DEFAULT_HTTP_ACTION_BODY.to_string());
        let timeout = section
            .duration("timeout")?
            .filter(|t| !t.is_zero())
            .unwrap_or(DEFAULT_HTTP_ACTION_TIMEOUT);
        Ok(Self {
            method,
            headers: section.string_map("headers")?,
            timeout,
            body: template(section, "body", &body_text)?,
            debug: section.bool("debug")?.unwrap_or(false),
            url,
        })
    }
}

impl ActionsConfig {
    /// Reads the `actions` section (a map of action name → definition).
    pub fn from_section(section: &Section<'_>) -> Result<Self, ConfigError> {
        let mut actions = BTreeMap::new();
        let empty = Value::Object(Default::default());
        for key in section.keys() {
            let value = section.raw(key).unwrap_or(&empty);
            let entry = Section::from_value(section.key_path(key), value)?;
            let type_name = entry
                .non_empty_string("type", "an action type")?
                .ok_or_else(|| ConfigError::Missing {
                    key: entry.key_path("type"),
                    expected: "expected the action type (gnomon runs http actions)".into(),
                })?;
            let name = entry.string_if_set("name")?.unwrap_or_else(|| key.clone());
            let kind = if type_name == "http" {
                let http = HttpActionConfig::from_section(&entry)?;
                entry.warn_unknown_keys();
                ActionKind::Http(http)
            } else {
                ActionKind::Unsupported { type_name }
            };
            actions.insert(key.clone(), ActionConfig { name, kind });
        }
        Ok(Self { actions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warning;
    use serde_json::json;

    fn read(value: Value) -> (Result<ActionsConfig, ConfigError>, Vec<String>) {
        let (result, warnings) = warning::collect(|| {
            let section = Section::from_value("actions", &value)?;
            ActionsConfig::from_section(&section)
        });
        (result, warnings.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn http_actions_get_gnmic_defaults() {
        let (config, warnings) = read(json!({
            "notify": {"type": "http", "url": "http://127.0.0.1:1/{{ .Input }}", "extra": 1},
            "cfg": {"type": "gnmi", "rpc": "set"},
        }));
        let config = config.unwrap();
        let ActionKind::Http(http) = &config.actions["notify"].kind else {
            panic!("not http")
        };
        assert_eq!(http.method, "GET");
        assert_eq!(http.timeout, DEFAULT_HTTP_ACTION_TIMEOUT);
        assert_eq!(http.body.source(), DEFAULT_HTTP_ACTION_BODY);
        assert_eq!(config.actions["notify"].name, "notify");
        assert_eq!(
            config.actions["cfg"].kind,
            ActionKind::Unsupported {
                type_name: "gnmi".into()
            }
        );
        assert_eq!(
            warnings,
            vec!["actions.notify.extra: unknown configuration key; ignored"]
        );
    }

    #[test]
    fn bad_http_actions_name_the_key() {
        for (value, expected) in [
            (
                json!({"a": {"type": "http", "url": "http://x", "method": "FETCH"}}),
                "actions.a.method: \"FETCH\" is not an HTTP method",
            ),
            (json!({"a": {"type": "http"}}), "actions.a.url: missing"),
            (
                json!({"a": {"type": "http", "url": "ftp://x"}}),
                "actions.a.url: \"ftp://x\" is not an http(s) URL",
            ),
            (
                json!({"a": {"type": "http", "url": "http://x", "body": "{{ range . }}"}}),
                "actions.a.body: \"{{ range . }}\" {{ range . }} is not supported",
            ),
            (json!({"a": {"url": "http://x"}}), "actions.a.type: missing"),
        ] {
            let error = read(value).0.unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }
}
