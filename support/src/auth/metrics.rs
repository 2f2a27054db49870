//! `brewlytics_auth_failures_total{reason}`: refused authentications of one server, by a
//! reason from a fixed set — never a key, a key id or an address. Every reason exists at 0
//! from the first scrape. The counters are appended to the server's own exposition
//! ([`AuthMetrics::append_to`]), so each `/metrics` carries its own.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Why an authentication was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No credentials (401, or the login page).
    Missing,
    /// Something that cannot be a key, or not a bearer token (401).
    Malformed,
    /// A well-formed key no key matches, or an expired session (401).
    Invalid,
    /// A revoked key, or a session whose key was revoked (401).
    Revoked,
    /// A valid key without the scope (403). Not charged to the client's limit.
    Forbidden,
    /// A failure past the client's limit (429).
    RateLimited,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Missing,
        Reason::Malformed,
        Reason::Invalid,
        Reason::Revoked,
        Reason::Forbidden,
        Reason::RateLimited,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Invalid => "invalid",
            Reason::Revoked => "revoked",
            Reason::Forbidden => "forbidden",
            Reason::RateLimited => "rate_limited",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    reason: &'static str,
}

/// The counters of one server.
#[derive(Debug)]
pub struct AuthMetrics {
    registry: Registry,
    failures: Family<Labels, Counter>,
}

impl Default for AuthMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthMetrics {
    pub fn new() -> Self {
        let failures = Family::<Labels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "brewlytics_auth_failures",
            "Refused authentications, by reason (missing, malformed, invalid, revoked, forbidden, rate_limited)",
            failures.clone(),
        );
        for r in Reason::ALL {
            let _ = failures.get_or_create(&Labels { reason: r.label() });
        }
        Self { registry, failures }
    }

    pub fn count(&self, reason: Reason) {
        self.failures
            .get_or_create(&Labels {
                reason: reason.label(),
            })
            .inc();
    }

    /// How many refusals of `reason` so far.
    pub fn get(&self, reason: Reason) -> u64 {
        self.failures
            .get_or_create(&Labels {
                reason: reason.label(),
            })
            .get()
    }

    /// `exposition` (OpenMetrics text ending with `# EOF`) with these counters added before
    /// its end.
    pub fn append_to(&self, exposition: String) -> String {
        let mut out = exposition;
        let body_len = out
            .strip_suffix("# EOF\n")
            .map(str::len)
            .unwrap_or(out.len());
        out.truncate(body_len);
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "encoding the auth metrics");
        }
        out.push_str("# EOF\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_exists_and_the_exposition_ends_once() {
        let m = AuthMetrics::new();
        m.count(Reason::Invalid);
        m.count(Reason::Invalid);
        let text =
            m.append_to("# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n# EOF\n".into());
        assert!(text.starts_with("# HELP x_total"));
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
        for r in Reason::ALL {
            let want = if r == Reason::Invalid { 2 } else { 0 };
            let line = format!(
                "brewlytics_auth_failures_total{{reason=\"{}\"}} {want}",
                r.label()
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        // Alone (a server with no metrics of its own).
        assert!(m.append_to(String::new()).ends_with("# EOF\n"));
    }
}
