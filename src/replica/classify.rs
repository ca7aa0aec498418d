//! Which statements may run on a replica: a conservative reading of the SQL
//! text.

use crate::BuiltQuery;

/// `true` when `q` may be sent to a read replica: a single statement that
/// only reads, by a conservative reading of its SQL text.
///
/// The rule, on the text outside quoted identifiers, string and dollar-quoted
/// literals and comments:
///
/// - the statement starts with `SELECT`, `WITH`, `VALUES`, `TABLE` or
///   `EXPLAIN` (possibly after opening parentheses);
/// - it contains none of the words `INSERT`, `UPDATE`, `DELETE`, `MERGE`
///   (data-modifying `WITH` queries, `EXPLAIN ANALYZE` of a write, row locks
///   `FOR UPDATE` / `FOR NO KEY UPDATE`), `SHARE` (`FOR SHARE`,
///   `FOR KEY SHARE`) or `INTO` (`SELECT … INTO new_table`);
/// - it calls none of the built-in functions that write, take locks or
///   depend on the session that ran an earlier statement: `nextval`,
///   `setval`, `currval`, `lastval`, `set_config`, `pg_notify`,
///   `txid_current`, `pg_current_xact_id`, `pg_current_wal_*`, and those
///   starting with `pg_advisory`, `pg_try_advisory` or `lo_`;
/// - there is nothing after a terminating `;`.
///
/// Everything else is treated as a write, including text that cannot be
/// read to the end (an unterminated literal or comment). A word inside a
/// quoted identifier (`"update"`) or a literal does not count, so column
/// names and values never change the answer; an unquoted word that merely
/// looks like one of these (`SUBSTRING(x FOR 2)` is fine, a column named
/// `share` is not) sends a read to the primary, which is always safe.
///
/// What text cannot show is a function of your own that modifies data
/// (`SELECT archive_orders()`): run such statements on the primary yourself
/// (`q.fetch_all(router.primary())`). Should one reach a replica anyway, the
/// replica refuses it (`cannot execute … in a read-only transaction`) and the
/// router runs it on the primary.
///
/// ```
/// use pgpatterns::{replica::is_read_only, BuiltQuery};
/// assert!(is_read_only(&BuiltQuery::fixed(r#"SELECT "update" FROM "orders" WHERE id = $1"#)));
/// assert!(is_read_only(&BuiltQuery::fixed("WITH t AS (SELECT 1 AS x) SELECT x FROM t")));
/// assert!(!is_read_only(&BuiltQuery::fixed("INSERT INTO t VALUES (1) RETURNING id")));
/// assert!(!is_read_only(&BuiltQuery::fixed("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")));
/// assert!(!is_read_only(&BuiltQuery::fixed("SELECT * FROM t FOR UPDATE SKIP LOCKED")));
/// assert!(!is_read_only(&BuiltQuery::fixed("SELECT nextval('orders_id_seq')")));
/// ```
#[must_use]
pub fn is_read_only(q: &BuiltQuery) -> bool {
    sql_is_read_only(q.sql())
}

/// Statements that may start a read.
const READ_STARTS: [&str; 5] = ["select", "with", "values", "table", "explain"];

pub(crate) fn sql_is_read_only(sql: &str) -> bool {
    let mut lexer = Lexer {
        s: sql.as_bytes(),
        i: 0,
    };
    let mut first_word = true;
    let mut ended = false;
    loop {
        let token = match lexer.next() {
            Some(Ok(token)) => token,
            Some(Err(Unreadable)) => return false,
            None => return !first_word,
        };
        if ended {
            // Something after `;`: a second statement.
            return false;
        }
        match token {
            Token::Word(word) => {
                if first_word {
                    if !READ_STARTS.iter().any(|w| word.eq_ignore_ascii_case(w)) {
                        return false;
                    }
                    first_word = false;
                }
                if is_write_word(word) {
                    return false;
                }
            }
            Token::Punct(b'(') if first_word => {}
            Token::Punct(b';') => ended = true,
            _ if first_word => return false,
            _ => {}
        }
    }
}

/// A word that makes a statement a write (or a lock) wherever it appears:
/// `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `SHARE`, `INTO`, or a built-in
/// function that writes, locks, or needs the primary's session.
fn is_write_word(word: &str) -> bool {
    // Lowercased into a stack buffer: no allocation per word. Longer words
    // can only match by prefix, which the first bytes decide.
    let mut buf = [0u8; 20];
    let len = word.len().min(buf.len());
    for (b, c) in buf.iter_mut().zip(word.bytes()) {
        *b = c.to_ascii_lowercase();
    }
    let lower = &buf[..len];
    let whole = word.len() == len;
    (whole
        && matches!(
            lower,
            b"insert"
                | b"update"
                | b"delete"
                | b"merge"
                | b"share"
                | b"into"
                | b"nextval"
                | b"setval"
                | b"currval"
                | b"lastval"
                | b"set_config"
                | b"pg_notify"
                | b"txid_current"
                | b"pg_current_xact_id"
        ))
        || [
            &b"pg_advisory"[..],
            b"pg_try_advisory",
            b"lo_",
            b"pg_current_wal",
        ]
        .iter()
        .any(|p| lower.starts_with(p))
}

/// The text cannot be read to its end (an unterminated literal or comment).
#[derive(Debug)]
struct Unreadable;

#[derive(Debug, PartialEq)]
enum Token<'a> {
    /// An unquoted word: keyword, identifier or function name.
    Word(&'a str),
    /// A quoted identifier, a string or dollar-quoted literal, a number or
    /// a `$n` parameter: nothing that can make a statement write.
    Opaque,
    /// Any other single character.
    Punct(u8),
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_word_char(c: u8) -> bool {
    is_word_start(c) || c.is_ascii_digit() || c == b'$'
}

impl<'a> Lexer<'a> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.s.get(self.i + ahead).copied()
    }

    fn next(&mut self) -> Option<Result<Token<'a>, Unreadable>> {
        loop {
            let c = self.peek(0)?;
            if c.is_ascii_whitespace() {
                self.i += 1;
            } else if c == b'-' && self.peek(1) == Some(b'-') {
                while let Some(c) = self.peek(0) {
                    self.i += 1;
                    if c == b'\n' {
                        break;
                    }
                }
            } else if c == b'/' && self.peek(1) == Some(b'*') {
                if let Err(e) = self.block_comment() {
                    return Some(Err(e));
                }
            } else {
                break;
            }
        }
        let c = self.peek(0)?;
        let start = self.i;
        let token = if is_word_start(c) {
            while self.peek(0).is_some_and(is_word_char) {
                self.i += 1;
            }
            let word = &self.s[start..self.i];
            match self.peek(0) {
                // A string with a prefix: E'…' (backslash escapes), B'…', X'…', N'…'.
                Some(b'\'') if word.len() == 1 => {
                    let escapes = word.eq_ignore_ascii_case(b"e");
                    self.quoted(b'\'', escapes).map(|()| Token::Opaque)
                }
                // Only ASCII bytes end a word, so `start..i` is on char boundaries.
                _ => Ok(std::str::from_utf8(word).map_or(Token::Opaque, Token::Word)),
            }
        } else if c == b'\'' {
            self.quoted(b'\'', false).map(|()| Token::Opaque)
        } else if c == b'"' {
            self.quoted(b'"', false).map(|()| Token::Opaque)
        } else if c == b'$' {
            self.dollar()
        } else if c.is_ascii_digit() {
            while self
                .peek(0)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_')
            {
                self.i += 1;
            }
            Ok(Token::Opaque)
        } else {
            self.i += 1;
            Ok(Token::Punct(c))
        };
        Some(token)
    }

    /// `/* … */`, nested as PostgreSQL nests them.
    fn block_comment(&mut self) -> Result<(), Unreadable> {
        let mut depth = 0usize;
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.i += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.i += 2;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                (Some(_), _) => self.i += 1,
                (None, _) => return Err(Unreadable),
            }
        }
    }

    /// A literal or identifier between `quote`s, where a doubled quote stands
    /// for itself (and, with `escapes`, a backslash escapes the next byte).
    fn quoted(&mut self, quote: u8, escapes: bool) -> Result<(), Unreadable> {
        self.i += 1;
        loop {
            // Jump to the next quote (or backslash).
            let rest = self.s.get(self.i..).unwrap_or_default();
            let skip = rest
                .iter()
                .position(|&c| c == quote || (escapes && c == b'\\'))
                .ok_or(Unreadable)?;
            self.i += skip;
            match self.peek(0) {
                None => return Err(Unreadable),
                Some(b'\\') if escapes => self.i += 2,
                Some(c) if c == quote => {
                    self.i += 1;
                    if self.peek(0) == Some(quote) {
                        self.i += 1;
                    } else {
                        return Ok(());
                    }
                }
                Some(_) => self.i += 1,
            }
        }
    }

    /// `$1` (a parameter), `$tag$ … $tag$` or `$$ … $$` (a literal).
    fn dollar(&mut self) -> Result<Token<'a>, Unreadable> {
        let start = self.i;
        self.i += 1;
        if self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
            while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            return Ok(Token::Opaque);
        }
        while self.peek(0).is_some_and(|c| is_word_char(c) && c != b'$') {
            self.i += 1;
        }
        if self.peek(0) != Some(b'$') {
            // A lone `$`: not valid SQL; let the server say so.
            return Ok(Token::Punct(b'$'));
        }
        self.i += 1;
        let tag = &self.s[start..self.i];
        let rest = &self.s[self.i..];
        match rest.windows(tag.len()).position(|w| w == tag) {
            Some(at) => {
                self.i += at + tag.len();
                Ok(Token::Opaque)
            }
            None => Err(Unreadable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sql_is_read_only as ro;

    #[test]
    fn reads() {
        for sql in [
            "SELECT 1",
            "  select * from t where a = $1 and b = $12",
            r#"SELECT "orders"."id" FROM "orders" WHERE "orders"."status" = CAST($1 AS text)"#,
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT n FROM r",
            "(SELECT 1) UNION (SELECT 2)",
            "VALUES (1), (2)",
            "TABLE t",
            "EXPLAIN (FORMAT JSON) SELECT 1",
            "SELECT 1;",
            "SELECT 1; -- done",
            r#"SELECT "update", "insert into", 'DELETE FROM t', $$INSERT$$, $f$ x $f$ FROM "delete""#,
            "SELECT E'it\\'s INSERT' AS x",
            "SELECT 'it''s UPDATE' AS x",
            "SELECT /* DELETE /* nested */ UPDATE */ 1",
            "SELECT 1 -- INSERT\n",
            "SELECT substring(x FROM 1 FOR 2) FROM t",
            "SELECT count(*) FROM (SELECT 1) AS \"matching\"",
            "SELECT a$b FROM t",
            "SELECT 1.5e3, 0x1F",
        ] {
            assert!(ro(sql), "{sql}");
        }
    }

    #[test]
    fn writes_and_locks() {
        for sql in [
            "",
            "   ",
            "-- only a comment",
            "INSERT INTO t VALUES (1)",
            "insert into t values (1) returning id",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "WITH moved AS (DELETE FROM t RETURNING *) INSERT INTO a SELECT * FROM moved",
            "SELECT * INTO new_t FROM t",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t FOR NO KEY UPDATE OF t SKIP LOCKED",
            "SELECT * FROM t FOR SHARE",
            "SELECT * FROM t FOR KEY SHARE NOWAIT",
            "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
            "SELECT nextval('s')",
            "SELECT NEXTVAL('s')",
            "SELECT setval('s', 1)",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_try_advisory_xact_lock(1)",
            "SELECT set_config('a.b', 'c', false)",
            "SELECT lo_create(0)",
            "SELECT pg_current_wal_lsn()",
            "SELECT txid_current()",
            "SELECT 1; DELETE FROM t",
            "SELECT 1; SELECT 2",
            "CREATE TABLE t (id int)",
            "SET search_path = x",
            "DO $$ BEGIN END $$",
            "CALL p()",
            "COPY t TO STDOUT",
            "TRUNCATE t",
            "LOCK TABLE t",
            // Unreadable to the end: treated as a write.
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT $x$ unterminated",
            "SELECT /* unterminated",
            "SELECT E'\\' DELETE",
            // A stray operator first.
            "+ SELECT 1",
        ] {
            assert!(!ro(sql), "{sql}");
        }
    }
}
