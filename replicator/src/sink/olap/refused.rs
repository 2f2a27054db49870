//! Changes OLAP refuses (a value its type cannot hold, a constraint the source does not
//! have): a COPY that fails is halved until the rows at fault are found; each is
//! dead-lettered (`cdc_dead_letters`, with the server's full text) or, with
//! `--on-error stop`, stops the replicator.

use sqlx::PgConnection;

use super::{ApplyError, OlapWriter, OnError};
use crate::change::{Op, Pos};
use crate::redact::{self, Class};
use crate::table::SourceTable;

/// The rows a server refuses, found by halving (pure: the caller tries each set of rows
/// together and says which it refused). A set taken is done; a refused set is tried again as
/// two halves, the first half first; a single refused row is one at fault.
#[derive(Debug)]
pub struct Halving {
    pending: Vec<Vec<usize>>,
}

impl Halving {
    /// Rows `0..rows`, which failed together.
    pub fn new(rows: usize) -> Self {
        Self {
            pending: vec![(0..rows).collect()],
        }
    }

    /// The next rows to try together; `None` when every row is placed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Vec<usize>> {
        while let Some(rows) = self.pending.pop() {
            if !rows.is_empty() {
                return Some(rows);
            }
        }
        None
    }

    /// `rows` (from [`Halving::next`]) were refused: the row at fault when it is one, else
    /// its halves are tried next.
    pub fn refused(&mut self, rows: &[usize]) -> Option<usize> {
        if let [row] = rows {
            return Some(*row);
        }
        let (a, b) = rows.split_at(rows.len() / 2);
        self.pending.push(b.to_vec());
        self.pending.push(a.to_vec());
        None
    }
}

impl OlapWriter {
    /// A COPY of `data` (rows at `spans`); on a deterministic failure, the rows OLAP refuses
    /// are found by halving and left out, and returned with their errors.
    pub async fn copy_checked(
        &mut self,
        sql: &str,
        data: &[u8],
        spans: &[(usize, usize)],
    ) -> Result<Vec<(usize, sqlx::Error)>, ApplyError> {
        match self.guarded_copy(sql, data).await? {
            Ok(()) => return Ok(Vec::new()),
            Err(e) if redact::classify(&e) == Class::Transient => return Err(e.into()),
            Err(_) => {}
        }
        let mut refused = Vec::new();
        let mut halving = Halving::new(spans.len());
        while let Some(rows) = halving.next() {
            let mut part = Vec::new();
            for &i in &rows {
                part.extend_from_slice(&data[spans[i].0..spans[i].1]);
            }
            match self.guarded_copy(sql, &part).await? {
                Ok(()) => {}
                Err(e) if redact::classify(&e) == Class::Transient => return Err(e.into()),
                Err(e) => {
                    if let Some(row) = halving.refused(&rows) {
                        refused.push((row, e));
                    }
                }
            }
        }
        refused.sort_by_key(|r| r.0);
        Ok(refused)
    }

    /// One COPY under a savepoint: an error leaves the transaction usable.
    async fn guarded_copy(
        &mut self,
        sql: &str,
        data: &[u8],
    ) -> Result<Result<(), sqlx::Error>, ApplyError> {
        sqlx::query("savepoint stage")
            .execute(&mut self.conn)
            .await?;
        let result = async {
            let mut copy = self.conn.copy_in_raw(sql).await?;
            for piece in data.chunks(1 << 20) {
                copy.send(piece).await?;
            }
            copy.finish().await.map(|_| ())
        }
        .await;
        let undo = if result.is_ok() {
            "release savepoint stage"
        } else {
            "rollback to savepoint stage"
        };
        sqlx::query(undo).execute(&mut self.conn).await?;
        Ok(result)
    }

    /// Changes OLAP refuses: dead-lettered (or, with `--on-error stop`, the end).
    pub async fn reject(
        &mut self,
        table: &SourceTable,
        positions: &[Pos],
        op: Op,
        e: &sqlx::Error,
    ) -> Result<(), ApplyError> {
        let name = table.qualified_source();
        if self.on_error == OnError::Stop {
            return Err(ApplyError::Rejected {
                pos: positions.first().copied().unwrap_or_default(),
                table: name,
                error: redact::db_error(e),
            });
        }
        for pos in positions {
            tracing::warn!(lsn = %pos.lsn, seq = pos.seq, table = %name,
                error = %redact::db_error(e), "change sent to cdc_dead_letters");
            deadletter(&mut self.conn, *pos, table, op, e).await?;
            self.totals.dead_letters += 1;
        }
        Ok(())
    }
}

/// Records a change OLAP refused, with the server's full text (it stays in OLAP).
pub async fn deadletter(
    conn: &mut PgConnection,
    pos: Pos,
    t: &SourceTable,
    op: Op,
    e: &sqlx::Error,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into cdc_dead_letters (lsn, seq, source_schema, source_table, op, error, sqlstate)
         values ($1::pg_lsn, $2, $3, $4, $5::\"char\", $6, $7) on conflict (lsn, seq) do nothing",
    )
    .bind(pos.lsn.to_string())
    .bind(pos.seq)
    .bind(t.schema.as_ref())
    .bind(t.name.as_ref())
    .bind(op.code().to_string())
    .bind(redact::full(e))
    .bind(redact::sqlstate(e))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a halving over `rows` rows against a server refusing any set holding one of `bad`;
    /// returns the rows found and how many tries it took.
    fn find(rows: usize, bad: &[usize]) -> (Vec<usize>, usize) {
        let mut h = Halving::new(rows);
        let (mut found, mut tries) = (Vec::new(), 0);
        while let Some(set) = h.next() {
            tries += 1;
            if set.iter().any(|r| bad.contains(r)) {
                found.extend(h.refused(&set));
            }
        }
        found.sort();
        (found, tries)
    }

    #[test]
    fn finds_exactly_the_rows_at_fault() {
        assert_eq!(find(1, &[0]).0, [0]);
        assert_eq!(find(8, &[5]).0, [5]);
        assert_eq!(find(7, &[0, 6]).0, [0, 6]);
        assert_eq!(find(100, &[3, 4, 50, 99]).0, [3, 4, 50, 99]);
        let all: Vec<usize> = (0..9).collect();
        assert_eq!(find(9, &all).0, all, "every row refused");
        assert_eq!(find(0, &[]).0, Vec::<usize>::new());
    }

    #[test]
    fn one_bad_row_costs_a_few_tries_not_one_per_row() {
        let (found, tries) = find(10_000, &[4321]);
        assert_eq!(found, [4321]);
        // The whole set, then two halves per level: 1 + 2 * ceil(log2(10000)).
        assert!(tries <= 1 + 2 * 14, "{tries} tries");
    }
}
