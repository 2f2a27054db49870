//! Business questions: one SQL file each in `dashboards/questions/`, the single source of the
//! `report` command, the built-in dashboard and the Metabase cards.
//!
//! A file starts with a header of `-- key: value` comment lines (`title`, `description`, and
//! one `param: NAME TYPE [DEFAULT]` per parameter) followed by the query. Parameters use
//! Metabase's native-query syntax so the body goes to Metabase unchanged:
//!
//! - `{{name}}` is a parameter. It must have a value (given or default) unless it sits in
//! - `[[ … ]]`, an optional clause, kept only when every parameter inside it has a value.
//!
//! For PostgreSQL the body is compiled to positional bind parameters (`$1::date`): values are
//! never written into the SQL text. Neither marker may appear inside a string literal.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;

/// The type of a question parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Date,
    Integer,
}

impl ParamType {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "date" => Some(Self::Date),
            "integer" => Some(Self::Integer),
            _ => None,
        }
    }

    /// The PostgreSQL cast that types the bind parameter.
    fn sql_cast(self) -> &'static str {
        match self {
            Self::Date => "date",
            Self::Integer => "bigint",
        }
    }

    /// Metabase's template-tag type.
    pub fn metabase_type(self) -> &'static str {
        match self {
            Self::Date => "date",
            Self::Integer => "number",
        }
    }
}

/// A parameter value, bound to the query (never formatted into it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamValue {
    Date(NaiveDate),
    Integer(i64),
}

impl ParamValue {
    fn type_(self) -> ParamType {
        match self {
            Self::Date(_) => ParamType::Date,
            Self::Integer(_) => ParamType::Integer,
        }
    }

    /// The value as a typed SQL literal (`date '2024-05-01'`, `10`).
    pub fn sql_literal(self) -> String {
        match self {
            Self::Date(d) => format!("date '{d}'"),
            Self::Integer(i) => i.to_string(),
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Date(d) => write!(f, "{d}"),
            Self::Integer(i) => write!(f, "{i}"),
        }
    }
}

/// One declared parameter of a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub type_: ParamType,
    pub default: Option<ParamValue>,
}

/// Values for a question's parameters, by name.
pub type Params = BTreeMap<String, ParamValue>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuestionError {
    #[error("unknown question {name:?} (`brewlytics report --list` shows them)")]
    Unknown { name: String },
    #[error("question {question}: {message}")]
    Malformed { question: String, message: String },
    #[error("question {question} takes no {param} parameter")]
    UnexpectedParam { question: String, param: String },
    #[error("question {question}: parameter {param} must be a {expected}")]
    WrongType {
        question: String,
        param: String,
        expected: &'static str,
    },
    #[error("question {question} needs a value for {param}")]
    Missing { question: String, param: String },
}

/// A question: its name (the file stem), header and SQL body.
#[derive(Debug, Clone)]
pub struct Question {
    pub name: String,
    pub title: String,
    pub description: String,
    pub params: Vec<Param>,
    /// The SQL after the header, in Metabase's syntax (`{{name}}`, `[[ … ]]`).
    pub body: String,
}

/// A question compiled for PostgreSQL: SQL with `$n` placeholders and the values to bind.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub sql: String,
    pub binds: Vec<ParamValue>,
}

macro_rules! questions {
    ($($name:literal),* $(,)?) => {
        /// Every question file, in the order `--list` shows them.
        const SOURCES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../questions/", $name, ".sql")))),*
        ];
    };
}

questions!(
    "headline",
    "daily-revenue",
    "revenue-by-hour",
    "sales-by-category",
    "top-products",
    "top-customers",
    "sales-by-employee",
    "store-comparison",
    "average-order-value",
    "open-orders",
    "pending-items",
    "busiest-days",
    "payment-methods",
    "inventory-movement",
    "clickstream-funnel",
    "product-conversion",
);

/// All questions, parsed from the files embedded in the binary.
pub fn all() -> Vec<Question> {
    SOURCES
        .iter()
        .map(|(name, text)| {
            Question::parse(name, text).unwrap_or_else(|e| panic!("embedded question: {e}"))
        })
        .collect()
}

/// The question called `name`.
pub fn find(name: &str) -> Result<Question, QuestionError> {
    SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, text)| Question::parse(n, text))
        .unwrap_or_else(|| {
            Err(QuestionError::Unknown {
                name: name.to_owned(),
            })
        })
}

impl Question {
    /// Parses a question file.
    pub fn parse(name: &str, text: &str) -> Result<Self, QuestionError> {
        let malformed = |message: String| QuestionError::Malformed {
            question: name.to_owned(),
            message,
        };
        let mut title = None;
        let mut description = String::new();
        let mut params = Vec::new();
        let mut body_start = text.len();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let trimmed = line.trim();
            let Some(comment) = trimmed.strip_prefix("--") else {
                body_start = offset;
                break;
            };
            offset += line.len();
            let Some((key, value)) = comment.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "title" => title = Some(value.to_owned()),
                "description" => description = value.to_owned(),
                "param" => {
                    let mut words = value.split_whitespace();
                    let (Some(pname), Some(ptype)) = (words.next(), words.next()) else {
                        return Err(malformed(format!("bad param line {value:?}")));
                    };
                    let type_ = ParamType::parse(ptype)
                        .ok_or_else(|| malformed(format!("unknown param type {ptype:?}")))?;
                    let default =
                        match words.next() {
                            None => None,
                            Some(d) => Some(parse_value(type_, d).ok_or_else(|| {
                                malformed(format!("bad default {d:?} for {pname}"))
                            })?),
                        };
                    params.push(Param {
                        name: pname.to_owned(),
                        type_,
                        default,
                    });
                }
                _ => {}
            }
        }
        let question = Self {
            name: name.to_owned(),
            title: title.ok_or_else(|| malformed("no `-- title:` line".into()))?,
            description,
            params,
            body: text[body_start..].trim().to_owned(),
        };
        // Every parameter used is declared, and the markers balance.
        for var in question.variables()? {
            if question.param(&var).is_none() {
                return Err(malformed(format!("{{{{{var}}}}} is not declared")));
            }
        }
        Ok(question)
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The parameter names the body uses, in order of first use.
    pub fn variables(&self) -> Result<Vec<String>, QuestionError> {
        let mut out = Vec::new();
        for segment in self.segments()? {
            for piece in segment.pieces {
                if let Piece::Var(v) = piece {
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
            }
        }
        Ok(out)
    }

    /// SQL for PostgreSQL with the given values (defaults fill the gaps). A value for a
    /// parameter the question does not declare, or of the wrong type, is an error.
    pub fn compile(&self, values: &Params) -> Result<Compiled, QuestionError> {
        for (name, value) in values {
            let param = self
                .param(name)
                .ok_or_else(|| QuestionError::UnexpectedParam {
                    question: self.name.clone(),
                    param: name.clone(),
                })?;
            if param.type_ != value.type_() {
                return Err(QuestionError::WrongType {
                    question: self.name.clone(),
                    param: name.clone(),
                    expected: param.type_.sql_cast(),
                });
            }
        }
        let mut binds: Vec<ParamValue> = Vec::new();
        let mut numbers: BTreeMap<String, usize> = BTreeMap::new();
        let sql = self.render(values, |name, value| {
            let n = *numbers.entry(name.to_owned()).or_insert_with(|| {
                binds.push(value);
                binds.len()
            });
            format!("${n}::{}", value.type_().sql_cast())
        })?;
        Ok(Compiled { sql, binds })
    }

    /// The query as one self-contained statement for a BI tool that runs it without
    /// parameters (Superset's datasets): optional clauses dropped, and each remaining
    /// parameter replaced by its default, written as a literal. The defaults come from the
    /// question file, never from a user.
    pub fn standalone_sql(&self) -> Result<String, QuestionError> {
        self.render(&Params::new(), |_, value| value.sql_literal())
    }

    /// The body with each optional clause kept when all its parameters have a value (given or
    /// default) and dropped otherwise, and each parameter written by `placeholder`.
    fn render(
        &self,
        values: &Params,
        mut placeholder: impl FnMut(&str, ParamValue) -> String,
    ) -> Result<String, QuestionError> {
        let value_of = |name: &str| -> Option<ParamValue> {
            values
                .get(name)
                .copied()
                .or_else(|| self.param(name).and_then(|p| p.default))
        };
        let mut sql = String::with_capacity(self.body.len());
        for segment in self.segments()? {
            let missing = segment.pieces.iter().find_map(|p| match p {
                Piece::Var(v) if value_of(v).is_none() => Some(v.clone()),
                _ => None,
            });
            match missing {
                Some(_) if segment.optional => continue,
                Some(param) => {
                    return Err(QuestionError::Missing {
                        question: self.name.clone(),
                        param,
                    })
                }
                None => {}
            }
            for piece in segment.pieces {
                match piece {
                    Piece::Text(t) => sql.push_str(&t),
                    Piece::Var(v) => {
                        let value = value_of(&v).expect("checked above");
                        sql.push_str(&placeholder(&v, value));
                    }
                }
            }
        }
        Ok(sql)
    }

    fn segments(&self) -> Result<Vec<Segment>, QuestionError> {
        let malformed = |message: &str| QuestionError::Malformed {
            question: self.name.clone(),
            message: message.to_owned(),
        };
        let mut segments = Vec::new();
        let mut rest = self.body.as_str();
        while !rest.is_empty() {
            match rest.find("[[") {
                Some(0) => {
                    let end = rest.find("]]").ok_or_else(|| malformed("unclosed [["))?;
                    let inner = &rest[2..end];
                    if inner.contains("[[") {
                        return Err(malformed("nested [["));
                    }
                    segments.push(Segment {
                        optional: true,
                        pieces: pieces(inner).map_err(malformed)?,
                    });
                    rest = &rest[end + 2..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let text = &rest[..end];
                    if text.contains("]]") {
                        return Err(malformed("]] without [["));
                    }
                    segments.push(Segment {
                        optional: false,
                        pieces: pieces(text).map_err(malformed)?,
                    });
                    rest = &rest[end..];
                }
            }
        }
        Ok(segments)
    }
}

/// Parses a value of `type_` from text (a `YYYY-MM-DD` date or an integer).
pub fn parse_value(type_: ParamType, text: &str) -> Option<ParamValue> {
    match type_ {
        ParamType::Date => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(ParamValue::Date),
        ParamType::Integer => text.parse().ok().map(ParamValue::Integer),
    }
}

struct Segment {
    optional: bool,
    pieces: Vec<Piece>,
}

enum Piece {
    Text(String),
    Var(String),
}

fn pieces(mut text: &str) -> Result<Vec<Piece>, &'static str> {
    let mut out = Vec::new();
    while let Some(start) = text.find("{{") {
        out.push(Piece::Text(text[..start].to_owned()));
        let end = text[start..].find("}}").ok_or("unclosed {{")? + start;
        let name = text[start + 2..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("bad parameter name in {{ }}");
        }
        out.push(Piece::Var(name.to_owned()));
        text = &text[end + 2..];
    }
    if text.contains("}}") {
        return Err("}} without {{");
    }
    out.push(Piece::Text(text.to_owned()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "-- title: Sample\n-- description: A test.\n-- param: from date\n\
        -- param: store integer\n-- param: limit integer 10\n\
        select 1 from t where true [[and d >= {{from}}]] [[and s = {{store}} and s2 = {{store}}]]\n\
        limit {{limit}}\n";

    fn d(s: &str) -> ParamValue {
        parse_value(ParamType::Date, s).unwrap()
    }

    #[test]
    fn parses_the_header() {
        let q = Question::parse("sample", SAMPLE).unwrap();
        assert_eq!(q.title, "Sample");
        assert_eq!(q.description, "A test.");
        assert_eq!(q.params.len(), 3);
        assert_eq!(q.params[2].default, Some(ParamValue::Integer(10)));
        assert!(q.body.starts_with("select 1"));
        assert_eq!(q.variables().unwrap(), ["from", "store", "limit"]);
    }

    #[test]
    fn optional_clauses_are_dropped_without_values() {
        let q = Question::parse("sample", SAMPLE).unwrap();
        let c = q.compile(&Params::new()).unwrap();
        assert_eq!(c.sql, "select 1 from t where true  \nlimit $1::bigint");
        assert_eq!(c.binds, vec![ParamValue::Integer(10)]);
    }

    #[test]
    fn standalone_sql_inlines_defaults_and_drops_the_rest() {
        let q = Question::parse("sample", SAMPLE).unwrap();
        assert_eq!(
            q.standalone_sql().unwrap(),
            "select 1 from t where true  \nlimit 10"
        );
        let q = Question::parse(
            "x",
            "-- title: X\n-- param: d date 2024-05-01\nselect {{d}}",
        )
        .unwrap();
        assert_eq!(q.standalone_sql().unwrap(), "select date '2024-05-01'");
        let q = Question::parse("x", "-- title: X\n-- param: d date\nselect {{d}}").unwrap();
        assert!(matches!(
            q.standalone_sql(),
            Err(QuestionError::Missing { .. })
        ));
    }

    #[test]
    fn values_become_numbered_binds_reused_for_repeats() {
        let q = Question::parse("sample", SAMPLE).unwrap();
        let mut p = Params::new();
        p.insert("from".into(), d("2024-05-01"));
        p.insert("store".into(), ParamValue::Integer(2));
        p.insert("limit".into(), ParamValue::Integer(3));
        let c = q.compile(&p).unwrap();
        assert_eq!(
            c.sql,
            "select 1 from t where true and d >= $1::date and s = $2::bigint and s2 = $2::bigint\nlimit $3::bigint"
        );
        assert_eq!(
            c.binds,
            vec![
                d("2024-05-01"),
                ParamValue::Integer(2),
                ParamValue::Integer(3)
            ]
        );
    }

    #[test]
    fn hostile_text_is_never_in_the_sql() {
        // Values only travel as binds; the SQL text is the file's, whatever the value.
        let q = Question::parse("sample", SAMPLE).unwrap();
        let mut p = Params::new();
        p.insert("store".into(), ParamValue::Integer(-1));
        let c = q.compile(&p).unwrap();
        assert!(!c.sql.contains("-1"));
    }

    #[test]
    fn wrong_or_unknown_params_are_errors() {
        let q = Question::parse("sample", SAMPLE).unwrap();
        let mut p = Params::new();
        p.insert("to".into(), d("2024-05-01"));
        assert!(matches!(
            q.compile(&p),
            Err(QuestionError::UnexpectedParam { .. })
        ));
        let mut p = Params::new();
        p.insert("from".into(), ParamValue::Integer(1));
        assert!(matches!(
            q.compile(&p),
            Err(QuestionError::WrongType { .. })
        ));
    }

    #[test]
    fn required_without_value_is_an_error() {
        let q = Question::parse("x", "-- title: X\n-- param: from date\nselect {{from}}").unwrap();
        assert_eq!(
            q.compile(&Params::new()),
            Err(QuestionError::Missing {
                question: "x".into(),
                param: "from".into()
            })
        );
    }

    #[test]
    fn malformed_files_are_refused() {
        for body in [
            "select {{from}}",
            "select 1 [[and {{from}}",
            "select 1 ]]",
            "select {{ bad name }}",
        ] {
            let text = format!("-- title: X\n-- param: from2 date\n{body}");
            assert!(Question::parse("x", &text).is_err(), "{body}");
        }
        assert!(Question::parse("x", "select 1").is_err());
    }

    #[test]
    fn every_embedded_question_parses_and_compiles() {
        let all = all();
        assert_eq!(all.len(), 16);
        for q in &all {
            assert!(!q.description.is_empty(), "{}", q.name);
            q.compile(&Params::new()).unwrap();
            assert_eq!(find(&q.name).unwrap().body, q.body);
        }
        assert!(matches!(find("nope"), Err(QuestionError::Unknown { .. })));
    }
}
