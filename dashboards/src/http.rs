//! A small JSON-over-HTTP client for the BI tools' REST APIs (Metabase, Superset): one base
//! URL, the headers a login gave, and errors that say which call failed and how — with every
//! secret (passwords, tokens) scrubbed from their text.

use std::time::Duration;

use brewlytics_support::dburl::scrub;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{tool} at {url}: {message}")]
    Transport {
        tool: &'static str,
        url: String,
        message: String,
    },
    #[error("{tool} {method} {path} answered {status}: {message}")]
    Http {
        tool: &'static str,
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{tool} {method} {path}: unexpected answer: {message}")]
    Shape {
        tool: &'static str,
        method: &'static str,
        path: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// A successful answer: its JSON body (`Null` when empty) and the cookies it set.
#[derive(Debug)]
pub struct Answer {
    pub body: Value,
    /// `name=value` of each `Set-Cookie` header.
    pub cookies: Vec<String>,
}

pub struct JsonApi {
    tool: &'static str,
    http: reqwest::Client,
    base: String,
    headers: Vec<(&'static str, String)>,
    secrets: Vec<String>,
}

impl JsonApi {
    /// A client of `tool` at `base`; `secrets` never appear in an error.
    pub fn new(tool: &'static str, base: &str, secrets: Vec<String>) -> Result<Self, ApiError> {
        let base = base.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ApiError::Transport {
                tool,
                url: base.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            tool,
            http,
            base,
            headers: Vec::new(),
            secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `value` as header `name` from now on (a session, a token: kept secret).
    pub fn set_header(&mut self, name: &'static str, value: &str) {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_owned()));
        self.secrets.push(value.to_owned());
    }

    /// An error about the answer to `method path`.
    pub fn shape(&self, method: Method, path: &str, message: &str) -> ApiError {
        ApiError::Shape {
            tool: self.tool,
            method: method.name(),
            path: path.to_owned(),
            message: self.scrub(message),
        }
    }

    fn scrub(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |t, s| scrub(&t, s))
    }

    fn transport(&self, e: reqwest::Error) -> ApiError {
        ApiError::Transport {
            tool: self.tool,
            url: self.base.clone(),
            message: self.scrub(&e.to_string()),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        Ok(self.send(method, path, &[], body).await?.body)
    }

    /// `method path?query` with `body` as JSON.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, ApiError> {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            Method::Get => self.http.get(&url),
            Method::Post => self.http.post(&url),
            Method::Put => self.http.put(&url),
            Method::Patch => self.http.patch(&url),
            Method::Delete => self.http.delete(&url),
        };
        if !query.is_empty() {
            req = req.query(query);
        }
        for (name, value) in &self.headers {
            req = req.header(*name, value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| self.transport(e))?;
        let status = res.status();
        let cookies = res
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(|v| v.trim().to_owned())
            .collect();
        let text = res.text().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(ApiError::Http {
                tool: self.tool,
                method: method.name(),
                path: path.to_owned(),
                status: status.as_u16(),
                message: self.scrub(error_message(&text).trim()),
            });
        }
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| self.shape(method, path, &e.to_string()))?
        };
        Ok(Answer { body, cookies })
    }
}

/// What an error answer says: `message` (a string, or the object of field errors),
/// `errors[0].message`, a JSON string, or the start of the text.
fn error_message(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return text.chars().take(200).collect();
    };
    let first_error = v
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
        .and_then(|e| e.get("message"));
    match v.get("message").or(first_error) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => v
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(200).collect()),
    }
}

/// The numeric `id` of an object in an answer.
pub fn id_of(api: &JsonApi, v: &Value, method: Method, path: &str) -> Result<i64, ApiError> {
    v.get("id")
        .and_then(Value::as_i64)
        .ok_or_else(|| api.shape(method, path, "no numeric id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_found_where_each_tool_puts_them() {
        assert_eq!(error_message(r#"{"message": "Forbidden"}"#), "Forbidden");
        assert_eq!(
            error_message(r#"{"message": {"sql": ["bad"]}}"#),
            r#"{"sql":["bad"]}"#
        );
        assert_eq!(
            error_message(r#"{"errors": [{"message": "no driver", "level": "error"}]}"#),
            "no driver"
        );
        assert_eq!(error_message(r#""Unauthenticated""#), "Unauthenticated");
        assert_eq!(error_message("<html>oops"), "<html>oops");
    }
}
