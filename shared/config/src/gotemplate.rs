//! The small part of Go's `text/template` that gnmic's loaders, actions and target templates
//! use in practice: `{{ . }}`, field access (`{{ .Input }}`, `{{ .Meta.site }}`),
//! `{{ index .Meta "key" }}`, `{{ json . }}`, `{{ join .Tags "," }}`, gnmic's `host`
//! function as a pipe (`{{ index . "source" | host }}`) and `{{ if … }}…{{ else }}…{{ end }}`,
//! with `{{-` / `-}}` trimming.
//!
//! Why a subset and not a template engine: gnmic's templates are Go templates; a different
//! engine would accept a different language and render differently. Everything outside this
//! subset is refused when the configuration is loaded, naming the construct, so a template
//! either renders as gnmic renders it or the configuration does not start.

use serde_json::Value;
use std::fmt;

/// A parsed template.
#[derive(Clone, PartialEq)]
pub struct GoTemplate {
    source: String,
    nodes: Vec<Node>,
}

impl fmt::Debug for GoTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GoTemplate({:?})", self.source)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Text(String),
    Action(Piped),
    /// `{{ if cond }}then{{ else }}otherwise{{ end }}`.
    If {
        cond: Piped,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// A pipeline and the functions its result is piped through (`| host`).
#[derive(Clone, Debug, PartialEq)]
struct Piped {
    pipeline: Pipeline,
    functions: Vec<Function>,
}

/// Functions a result can be piped through.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Function {
    /// gnmic's `host`: the host part of `host:port`.
    Host,
}

/// An `if` being parsed: its condition, its `then` nodes, and its `else` nodes once seen.
struct OpenIf {
    cond: Piped,
    then: Vec<Node>,
    otherwise: Option<Vec<Node>>,
}

/// Where parsed nodes go: the innermost open `if`'s current branch, else the top level.
fn current<'a>(nodes: &'a mut Vec<Node>, open: &'a mut [OpenIf]) -> &'a mut Vec<Node> {
    match open.last_mut() {
        Some(OpenIf {
            otherwise: Some(otherwise),
            ..
        }) => otherwise,
        Some(frame) => &mut frame.then,
        None => nodes,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Pipeline {
    Value(Vec<String>),
    Index(Vec<String>, Vec<Key>),
    Json(Vec<String>),
    Join(Vec<String>, String),
}

#[derive(Clone, Debug, PartialEq)]
enum Key {
    Text(String),
    Number(usize),
    /// A field of the data, e.g. `{{ index .Targets .Input }}`.
    Field(Vec<String>),
}

/// What the subset supports, for error messages.
const SUPPORTED: &str = "supported: {{ . }}, {{ .Field.sub }}, {{ index .Field \"key\" }}, {{ json .Field }}, {{ join .Field \"sep\" }}, | host, {{ if … }}{{ else }}{{ end }}";

impl GoTemplate {
    /// Parses `source`, or says which construct is not supported.
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut nodes = Vec::new();
        let mut open: Vec<OpenIf> = Vec::new();
        let mut rest = source;
        let mut trim_next = false;
        while let Some(start) = rest.find("{{") {
            let mut text = &rest[..start];
            if trim_next {
                text = text.trim_start();
            }
            let after = &rest[start + 2..];
            let (trim_before, after) = match after.strip_prefix('-') {
                Some(a) if a.starts_with([' ', '\t', '\n', '\r']) => (true, a),
                _ => (false, after),
            };
            if trim_before {
                text = text.trim_end();
            }
            if !text.is_empty() {
                current(&mut nodes, &mut open).push(Node::Text(text.to_string()));
            }
            let end = find_close(after)
                .ok_or_else(|| format!("unclosed action at {:?}", clip(&rest[start..])))?;
            let mut inner = &after[..end];
            trim_next = false;
            if let Some(i) = inner.strip_suffix('-') {
                if i.ends_with([' ', '\t', '\n', '\r']) {
                    inner = i;
                    trim_next = true;
                }
            }
            let action = inner.trim();
            if let Some(cond) = action.strip_prefix("if ") {
                open.push(OpenIf {
                    cond: parse_piped(cond.trim())?,
                    then: Vec::new(),
                    otherwise: None,
                });
            } else if action == "else" {
                match open.last_mut() {
                    Some(frame) if frame.otherwise.is_none() => frame.otherwise = Some(Vec::new()),
                    _ => return Err(format!("{{{{ else }}}} without an open if ({SUPPORTED})")),
                }
            } else if action == "end" {
                let frame = open
                    .pop()
                    .ok_or_else(|| format!("{{{{ end }}}} without an open if ({SUPPORTED})"))?;
                current(&mut nodes, &mut open).push(Node::If {
                    cond: frame.cond,
                    then: frame.then,
                    otherwise: frame.otherwise.unwrap_or_default(),
                });
            } else {
                let piped = parse_piped(action)?;
                current(&mut nodes, &mut open).push(Node::Action(piped));
            }
            rest = &after[end + 2..];
        }
        if !open.is_empty() {
            return Err(format!("{{{{ if }}}} without {{{{ end }}}} ({SUPPORTED})"));
        }
        let text = if trim_next { rest.trim_start() } else { rest };
        if !text.is_empty() {
            nodes.push(Node::Text(text.to_string()));
        }
        Ok(Self {
            source: source.to_string(),
            nodes,
        })
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template has no actions (its text is its rendering).
    pub fn is_literal(&self) -> bool {
        self.nodes.iter().all(|n| matches!(n, Node::Text(_)))
    }

    /// Renders against `data` (JSON, as Go's template sees a decoded document). Values print
    /// as Go prints them: strings as is, lists `[a b]`, maps `map[k:v]`, a missing field
    /// `<no value>`. An index out of range or `join` of something other than a list of strings
    /// is an error, as in Go.
    pub fn render(&self, data: &Value) -> Result<String, String> {
        let mut out = String::new();
        render_nodes(&self.nodes, data, &mut out)?;
        Ok(out)
    }
}

fn render_nodes(nodes: &[Node], data: &Value, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Action(piped) => out.push_str(&evaluate(piped, data)?.printed()),
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                let branch = if evaluate(cond, data)?.truthy() {
                    then
                } else {
                    otherwise
                };
                render_nodes(branch, data, out)?;
            }
        }
    }
    Ok(())
}

/// What a pipeline produced: a value of the data, or text a function made.
enum Evaluated {
    Value(Option<Value>),
    Text(String),
}

impl Evaluated {
    fn printed(&self) -> String {
        match self {
            Self::Value(value) => go_print(value.as_ref()),
            Self::Text(text) => text.clone(),
        }
    }

    /// Go's truth: false, 0, nil, and empty strings, lists and maps are false.
    fn truthy(&self) -> bool {
        match self {
            Self::Text(text) => !text.is_empty(),
            Self::Value(None | Some(Value::Null)) => false,
            Self::Value(Some(Value::Bool(b))) => *b,
            Self::Value(Some(Value::Number(n))) => n.as_f64().is_some_and(|f| f != 0.0),
            Self::Value(Some(Value::String(s))) => !s.is_empty(),
            Self::Value(Some(Value::Array(items))) => !items.is_empty(),
            Self::Value(Some(Value::Object(map))) => !map.is_empty(),
        }
    }
}

fn evaluate(piped: &Piped, data: &Value) -> Result<Evaluated, String> {
    let mut result = run(&piped.pipeline, data)?;
    for function in &piped.functions {
        result = match function {
            Function::Host => {
                let text = result.printed();
                Evaluated::Text(
                    super::prometheus_output::split_host_port(&text)
                        .0
                        .to_string(),
                )
            }
        };
    }
    Ok(result)
}

/// Finds the `}}` closing an action, skipping quoted strings.
fn find_close(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(q) => {
                if c == b'\\' && q == b'"' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == b'"' || c == b'`' => quote = Some(c),
            None if c == b'}' && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

fn tokens(action: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut token = String::new();
        if c == '"' || c == '`' {
            chars.next();
            token.push('"');
            let mut closed = false;
            while let Some(ch) = chars.next() {
                if ch == c {
                    closed = true;
                    break;
                }
                if ch == '\\' && c == '"' {
                    match chars.next() {
                        Some('n') => token.push('\n'),
                        Some('t') => token.push('\t'),
                        Some(other) => token.push(other),
                        None => break,
                    }
                } else {
                    token.push(ch);
                }
            }
            if !closed {
                return Err(format!("unterminated string in {{{{ {action} }}}}"));
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                token.push(ch);
                chars.next();
            }
        }
        out.push(token);
    }
    Ok(out)
}

fn field_path(token: &str, action: &str) -> Result<Vec<String>, String> {
    if token == "." {
        return Ok(Vec::new());
    }
    let Some(rest) = token.strip_prefix('.') else {
        return Err(format!(
            "{{{{ {action} }}}}: {token:?} is not a field (expected . or .Field; {SUPPORTED})"
        ));
    };
    let parts: Vec<String> = rest.split('.').map(str::to_string).collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || !p.chars().all(|c| c.is_alphanumeric() || c == '_'))
    {
        return Err(format!("{{{{ {action} }}}}: {token:?} is not a field path"));
    }
    Ok(parts)
}

/// A pipeline with its `| function`s.
fn parse_piped(action: &str) -> Result<Piped, String> {
    let mut parts = action.split('|');
    let pipeline = parse_action(parts.next().unwrap_or_default().trim())?;
    let functions = parts
        .map(|name| match name.trim() {
            "host" => Ok(Function::Host),
            other => Err(format!(
                "{{{{ {action} }}}}: the function {other:?} is not supported ({SUPPORTED})"
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(Piped {
        pipeline,
        functions,
    })
}

fn parse_action(action: &str) -> Result<Pipeline, String> {
    if action.starts_with("/*") {
        return Err(format!("comments are not supported ({SUPPORTED})"));
    }
    let tokens = tokens(action)?;
    let Some(first) = tokens.first() else {
        return Err(format!("empty action {{{{}}}} ({SUPPORTED})"));
    };
    let unsupported = || format!("{{{{ {action} }}}} is not supported ({SUPPORTED})");
    if action.contains('$') || action.contains('(') {
        return Err(unsupported());
    }
    match first.as_str() {
        "index" if tokens.len() >= 3 => {
            let path = field_path(&tokens[1], action)?;
            let keys = tokens[2..]
                .iter()
                .map(|t| match t.strip_prefix('"') {
                    Some(text) => Ok(Key::Text(text.to_string())),
                    None if t.starts_with('.') => field_path(t, action).map(Key::Field),
                    None => t
                        .parse::<usize>()
                        .map(Key::Number)
                        .map_err(|_| unsupported()),
                })
                .collect::<Result<_, _>>()?;
            Ok(Pipeline::Index(path, keys))
        }
        "json" if tokens.len() == 2 => Ok(Pipeline::Json(field_path(&tokens[1], action)?)),
        "join" if tokens.len() == 3 => {
            let separator = tokens[2].strip_prefix('"').ok_or_else(unsupported)?;
            Ok(Pipeline::Join(
                field_path(&tokens[1], action)?,
                separator.to_string(),
            ))
        }
        _ if tokens.len() == 1 && first.starts_with('.') => {
            Ok(Pipeline::Value(field_path(first, action)?))
        }
        _ => Err(unsupported()),
    }
}

fn lookup<'a>(data: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(data, |value, key| match value {
        Value::Object(map) => map.get(key),
        _ => None,
    })
}

fn run(pipeline: &Pipeline, data: &Value) -> Result<Evaluated, String> {
    match pipeline {
        Pipeline::Value(path) => Ok(Evaluated::Value(lookup(data, path).cloned())),
        Pipeline::Json(path) => Ok(Evaluated::Text(
            lookup(data, path)
                .map(Value::to_string)
                .unwrap_or_else(|| "null".to_string()),
        )),
        Pipeline::Index(path, keys) => {
            let mut value = lookup(data, path);
            for key in keys {
                let field_key;
                let key = match key {
                    Key::Field(path) => match lookup(data, path) {
                        Some(Value::String(s)) => {
                            field_key = Key::Text(s.clone());
                            &field_key
                        }
                        Some(Value::Number(n)) if n.as_u64().is_some() => {
                            field_key = Key::Number(n.as_u64().unwrap_or(0) as usize);
                            &field_key
                        }
                        _ => return Err(format!("index: .{} is not a key", path.join("."))),
                    },
                    other => other,
                };
                value = match (value, key) {
                    (Some(Value::Object(map)), Key::Text(k)) => map.get(k),
                    (Some(Value::Array(items)), Key::Number(i)) => {
                        Some(items.get(*i).ok_or_else(|| {
                            format!("index {i} out of range (length {})", items.len())
                        })?)
                    }
                    (None | Some(Value::Null), _) => None,
                    (Some(_), Key::Field(_)) => None,
                    (Some(other), _) => {
                        return Err(format!("cannot index {}", super::reader::type_name(other)))
                    }
                };
            }
            Ok(Evaluated::Value(value.cloned()))
        }
        Pipeline::Join(path, separator) => match lookup(data, path) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(format!(
                        "join: {} in the list is not a string",
                        super::reader::type_name(other)
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|parts| Evaluated::Text(parts.join(separator))),
            Some(other) => Err(format!(
                "join: .{} is {}, not a list",
                path.join("."),
                super::reader::type_name(other)
            )),
            None => Err(format!("join: .{} is missing", path.join("."))),
        },
    }
}

/// How Go's template prints a decoded JSON value.
fn go_print(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "<no value>".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(items)) => format!(
            "[{}]",
            items
                .iter()
                .map(|v| go_print(Some(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Some(Value::Object(map)) => format!(
            "map[{}]",
            map.iter()
                .map(|(k, v)| format!("{k}:{}", go_print(Some(v))))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_the_supported_subset() {
        let data = json!({"ID": "r1", "Tags": ["a", "b"], "Meta": {"site": "dub"}, "Port": 57400, "Key": "site"});
        for (template, expected) in [
            ("{{ .ID }}", "r1"),
            ("{{.ID}}-{{ .Port }}", "r1-57400"),
            ("{{ .Meta.site }}", "dub"),
            ("{{ index .Meta \"site\" }}", "dub"),
            ("{{ index .Tags 1 }}", "b"),
            ("{{ index .Meta .Key }}", "dub"),
            ("{{ join .Tags \",\" }}", "a,b"),
            ("{{ json .Tags }}", "[\"a\",\"b\"]"),
            ("{{ .Tags }}", "[a b]"),
            ("{{ .Meta }}", "map[site:dub]"),
            ("{{ .Missing }}", "<no value>"),
            ("x  {{- .ID -}}  y", "xr1y"),
            ("plain", "plain"),
        ] {
            let parsed = GoTemplate::parse(template).unwrap();
            assert_eq!(parsed.render(&data).unwrap(), expected, "{template}");
        }
        assert!(GoTemplate::parse("plain").unwrap().is_literal());
    }

    #[test]
    fn refuses_what_it_does_not_implement() {
        for template in [
            "{{ range .Tags }}{{ . }}{{ end }}",
            "{{ if .A }}x",
            "x{{ else }}y",
            "{{ end }}",
            "{{ .A | upper }}",
            "{{ .A | json }}",
            "{{ $x := 1 }}",
            "{{ printf \"%s\" .A }}",
            "{{ .A",
            "{{ Input }}",
            "{{/* c */}}",
        ] {
            let error = GoTemplate::parse(template).unwrap_err();
            assert!(
                error.contains("not supported")
                    || error.contains("unclosed")
                    || error.contains("not a field")
                    || error.contains("without"),
                "{template}: {error}"
            );
        }
    }

    #[test]
    fn gnmics_target_templates_render_as_in_gnmic() {
        let default = GoTemplate::parse(
            "{{- if index . \"subscription-target\" -}}\n{{ index . \"subscription-target\" }}\n{{- else -}}\n{{ index . \"source\" | host }}\n{{- end -}}",
        )
        .unwrap();
        for (meta, expected) in [
            (
                json!({"source": "r1:57400", "subscription-target": ""}),
                "r1",
            ),
            (json!({"source": "r1:57400"}), "r1"),
            (json!({"source": "[::1]:57400"}), "::1"),
            (
                json!({"source": "r1:57400", "subscription-target": "core"}),
                "core",
            ),
        ] {
            assert_eq!(default.render(&meta).unwrap(), expected, "{meta}");
        }
        let nested = GoTemplate::parse(
            "{{ if .A }}a{{ if .B }}b{{ else }}!b{{ end }}{{ else }}!a{{ end }}-{{ .C | host }}",
        )
        .unwrap();
        for (data, expected) in [
            (json!({"A": true, "B": "x", "C": "h:1"}), "ab-h"),
            (json!({"A": 1, "B": [], "C": "h"}), "a!b-h"),
            (json!({"A": "", "C": "h:2"}), "!a-h"),
            (json!({"A": {}, "C": "h"}), "!a-h"),
        ] {
            assert_eq!(nested.render(&data).unwrap(), expected, "{data}");
        }
    }

    #[test]
    fn render_errors_are_go_errors() {
        let data = json!({"Tags": ["a"], "N": 1});
        let index = GoTemplate::parse("{{ index .Tags 3 }}").unwrap();
        assert!(index.render(&data).unwrap_err().contains("out of range"));
        let join = GoTemplate::parse("{{ join .N \",\" }}").unwrap();
        assert!(join.render(&data).unwrap_err().contains("not a list"));
    }
}
