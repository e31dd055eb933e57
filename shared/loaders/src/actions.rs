//! gnmic's `http` action, run for each target a loader adds (`on-add`) or removes
//! (`on-delete`), in the configured order.
//!
//! Each action renders its URL and body from the action context gnmic passes
//! (`.Input`: the target name, `.Env`: results of the earlier actions by name, `.Vars`:
//! `vars`/`vars-file`, `.Targets`: the discovered targets, for on-add), sends it through the
//! timeout-bounded client, and succeeds on HTTP 200 only, as gnmic. Secrets in `.Targets`
//! are rendered as `****`: a remote must not learn devices' passwords from an action.

use crate::http::{body_excerpt, HttpClient};
use gnomon_config::actions::{ActionConfig, ActionKind, HttpActionConfig};
use gnomon_config::loader::{LoaderActions, LoaderConfig};
use gnomon_config::TargetConfig;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Why an action failed; names the action, and the URL and status when there was a call.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("action {action:?}: {method} {url}: {reason}")]
    Request {
        action: String,
        method: String,
        url: String,
        reason: String,
    },
    #[error("action {action:?}: {method} {url}: HTTP {status}: {body}")]
    Status {
        action: String,
        method: String,
        url: String,
        status: u16,
        body: String,
    },
    #[error("action {action:?}: {reason}")]
    Setup { action: String, reason: String },
}

/// One `http` action ready to run.
pub struct HttpAction {
    name: String,
    config: HttpActionConfig,
    client: HttpClient,
}

impl HttpAction {
    pub fn new(name: &str, config: &HttpActionConfig) -> Result<Self, ActionError> {
        let client =
            HttpClient::new(reqwest::Client::builder(), config.timeout).map_err(|reason| {
                ActionError::Setup {
                    action: name.to_string(),
                    reason,
                }
            })?;
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            client,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders and sends the request for `context`; returns the answer's body (JSON when it
    /// parses as JSON, else text).
    pub async fn run(&self, context: &Value) -> Result<Value, ActionError> {
        let setup = |reason: String| ActionError::Setup {
            action: self.name.clone(),
            reason,
        };
        let url = self
            .config
            .url
            .render(context)
            .map_err(|e| setup(format!("url: {e}")))?;
        let body = self
            .config
            .body
            .render(context)
            .map_err(|e| setup(format!("body: {e}")))?;
        let method = reqwest::Method::from_bytes(self.config.method.as_bytes())
            .map_err(|e| setup(e.to_string()))?;
        let mut request = self.client.request(method, &url).body(body);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        if self.config.debug {
            tracing::info!(action = %self.name, %url, "running http action");
        }
        let reply = self
            .client
            .send(request)
            .await
            .map_err(|reason| ActionError::Request {
                action: self.name.clone(),
                method: self.config.method.clone(),
                url: url.clone(),
                reason,
            })?;
        if reply.status != reqwest::StatusCode::OK {
            return Err(ActionError::Status {
                action: self.name.clone(),
                method: self.config.method.clone(),
                url,
                status: reply.status.as_u16(),
                body: body_excerpt(&reply.body),
            });
        }
        Ok(serde_json::from_slice(&reply.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&reply.body).into_owned())))
    }
}

/// The on-add and on-delete actions of a loader, with its vars.
pub struct ActionRunner {
    on_add: Vec<HttpAction>,
    on_delete: Vec<HttpAction>,
    vars: Value,
}

impl ActionRunner {
    /// Sets up `actions` (from `LoaderConfig::resolve_actions`); reads `vars-file` (YAML or
    /// JSON map; `vars` win over it, as gnmic).
    pub fn new(actions: &LoaderActions, config: &LoaderConfig) -> Result<Self, ActionError> {
        let build = |list: &[ActionConfig]| -> Result<Vec<HttpAction>, ActionError> {
            list.iter()
                .map(|action| match &action.kind {
                    ActionKind::Http(http) => HttpAction::new(&action.name, http),
                    ActionKind::Unsupported { type_name } => Err(ActionError::Setup {
                        action: action.name.clone(),
                        reason: format!("type {type_name:?} is not supported"),
                    }),
                })
                .collect()
        };
        let mut vars = Map::new();
        if let Some(path) = &config.vars_file {
            let setup = |reason: String| ActionError::Setup {
                action: "vars-file".into(),
                reason: format!("{}: {reason}", path.display()),
            };
            let text = std::fs::read_to_string(path).map_err(|e| setup(e.to_string()))?;
            if text.len() > crate::MAX_DOCUMENT_SIZE {
                return Err(setup("too large".into()));
            }
            match crate::file::parse_document(&text, &path.display().to_string()) {
                Ok(Value::Object(map)) => vars = map,
                Ok(Value::Null) => {}
                Ok(_) => return Err(setup("is not a map of variables".into())),
                Err(e) => return Err(setup(e.to_string())),
            }
        }
        vars.extend(config.vars.clone());
        Ok(Self {
            on_add: build(&actions.on_add)?,
            on_delete: build(&actions.on_delete)?,
            vars: Value::Object(vars),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.on_add.is_empty() && self.on_delete.is_empty()
    }

    async fn run_all(&self, actions: &[HttpAction], mut context: Value) -> Result<(), ActionError> {
        for action in actions {
            let result = action.run(&context).await?;
            if let Some(env) = context.get_mut("Env").and_then(Value::as_object_mut) {
                env.insert(action.name().to_string(), result);
            }
        }
        Ok(())
    }

    /// Runs the on-add actions for `name`; `targets` is the complete discovered set.
    pub async fn on_add(
        &self,
        name: &str,
        targets: &BTreeMap<String, TargetConfig>,
    ) -> Result<(), ActionError> {
        if self.on_add.is_empty() {
            return Ok(());
        }
        let context = serde_json::json!({
            "Input": name,
            "Env": {},
            "Vars": self.vars,
            "Targets": serde_json::to_value(targets).unwrap_or(Value::Null),
        });
        self.run_all(&self.on_add, context).await
    }

    /// Runs the on-delete actions for `name`.
    pub async fn on_delete(&self, name: &str) -> Result<(), ActionError> {
        if self.on_delete.is_empty() {
            return Ok(());
        }
        let context = serde_json::json!({"Input": name, "Env": {}, "Vars": self.vars});
        self.run_all(&self.on_delete, context).await
    }
}
