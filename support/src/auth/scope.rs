//! What a key may do: a fixed set of scopes, each named `resource:action`.
//!
//! Two rules widen a key's scopes, and nothing else does: `admin` grants every scope, and a
//! `…:write` scope grants the `…:read` of the same resource (a till that places orders may
//! read them back). [`Scopes::allows`] is the one place that applies them.

use std::fmt;
use std::str::FromStr;

/// One scope. The names are what keys store and what `--scope` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `GET /orders/{id}`.
    OrdersRead,
    /// Placing, moving along and deleting orders (a till).
    OrdersWrite,
    /// The stores and the active staff.
    CatalogRead,
    /// The menu, prices, staff and stock (a manager).
    CatalogWrite,
    /// Registering customers (names and emails: personal data).
    CustomersWrite,
    /// The dashboard and reports (top customers by name inside).
    ReportsRead,
    /// The web shop's clickstream (`POST /events`).
    EventsWrite,
    /// Operations: the replicator's status page and `/status`, and every `/metrics`.
    OpsRead,
    /// Everything.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 9] = [
        Scope::OrdersRead,
        Scope::OrdersWrite,
        Scope::CatalogRead,
        Scope::CatalogWrite,
        Scope::CustomersWrite,
        Scope::ReportsRead,
        Scope::EventsWrite,
        Scope::OpsRead,
        Scope::Admin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::OrdersRead => "orders:read",
            Scope::OrdersWrite => "orders:write",
            Scope::CatalogRead => "catalog:read",
            Scope::CatalogWrite => "catalog:write",
            Scope::CustomersWrite => "customers:write",
            Scope::ReportsRead => "reports:read",
            Scope::EventsWrite => "events:write",
            Scope::OpsRead => "ops:read",
            Scope::Admin => "admin",
        }
    }

    /// What the scope is for, in a few words (the OpenAPI document and `api-key` say it).
    pub fn description(self) -> &'static str {
        match self {
            Scope::OrdersRead => "read orders",
            Scope::OrdersWrite => "place, advance, cancel and delete orders (and read them)",
            Scope::CatalogRead => "list stores and active staff",
            Scope::CatalogWrite => {
                "change the menu, prices, staff and stock (and read the catalog)"
            }
            Scope::CustomersWrite => "register customers (personal data)",
            Scope::ReportsRead => "the dashboard and reports (personal data)",
            Scope::EventsWrite => "send clickstream events",
            Scope::OpsRead => "the replicator's status and every /metrics",
            Scope::Admin => "everything",
        }
    }

    /// The write scope whose holders may also read what this scope reads.
    fn granted_by_write(self) -> Option<Scope> {
        match self {
            Scope::OrdersRead => Some(Scope::OrdersWrite),
            Scope::CatalogRead => Some(Scope::CatalogWrite),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scope name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}; the scopes are {list}", list = Scope::ALL.map(Scope::name).join(", "))]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name() == wanted)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// The scopes of one key, sorted and without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        let mut v: Vec<Scope> = scopes.into_iter().collect();
        v.sort();
        v.dedup();
        Self(v)
    }

    /// Every scope (the key `brewlytics up` makes).
    pub fn all() -> Self {
        Self::new(Scope::ALL)
    }

    /// Parses stored names; an unknown one is an error (a key from a newer version).
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, UnknownScope> {
        names
            .iter()
            .map(|n| n.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// Whether these scopes allow what `wanted` guards (see the module's two rules).
    pub fn allows(&self, wanted: Scope) -> bool {
        self.0.iter().any(|&held| {
            held == wanted || held == Scope::Admin || wanted.granted_by_write() == Some(held)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.name()).collect()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for s in Scope::ALL {
            assert_eq!(s.name().parse::<Scope>().unwrap(), s);
        }
        let err = "orders:delete".parse::<Scope>().unwrap_err().to_string();
        assert!(
            err.contains("\"orders:delete\"") && err.contains("ops:read"),
            "{err}"
        );
    }

    #[test]
    fn admin_grants_everything_and_write_grants_its_read() {
        let admin = Scopes::new([Scope::Admin]);
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));

        let till = Scopes::new([Scope::OrdersWrite]);
        assert!(till.allows(Scope::OrdersWrite) && till.allows(Scope::OrdersRead));
        for other in [
            Scope::CatalogRead,
            Scope::CatalogWrite,
            Scope::CustomersWrite,
            Scope::ReportsRead,
            Scope::OpsRead,
            Scope::EventsWrite,
            Scope::Admin,
        ] {
            assert!(!till.allows(other), "{other}");
        }
        // Reading never grants writing.
        let reader = Scopes::new([Scope::OrdersRead, Scope::CatalogRead]);
        assert!(!reader.allows(Scope::OrdersWrite) && !reader.allows(Scope::CatalogWrite));
        assert!(!Scopes::default().allows(Scope::OrdersRead));
    }

    #[test]
    fn scopes_are_sorted_once_each() {
        let s = Scopes::parse(&["ops:read", "orders:write", "ops:read"]).unwrap();
        assert_eq!(s.to_string(), "orders:write,ops:read");
        assert!(Scopes::parse(&["nope"]).is_err());
    }
}
