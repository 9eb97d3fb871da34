//! A minimal read-only reader of SQLite database files, for rpm's
//! `rpmdb.sqlite`: finds a table in `sqlite_master` and returns every row
//! of it (table b-trees: interior and leaf pages, overflow pages, the record
//! format). No SQL, no indexes, no WAL (a database with pending WAL frames
//! reads as of its last checkpoint). Everything is bounds-checked: a
//! malformed or hostile file is an error, never a panic or a loop (pages
//! visited are bounded by the page count).

/// A column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

/// Why a database could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqliteError {
    #[error("not a SQLite 3 database")]
    NotSqlite,
    #[error("malformed database: {0}")]
    Malformed(&'static str),
    #[error("no table {0:?}")]
    NoTable(String),
}

use SqliteError::Malformed;

struct Db<'a> {
    bytes: &'a [u8],
    page_size: usize,
    usable: usize,
    pages: usize,
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64, SqliteError> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(*pos).ok_or(Malformed("varint past the end"))?;
        *pos += 1;
        if i == 8 {
            return Ok((v << 8) | u64::from(byte));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Ok(v)
}

fn be(b: &[u8], pos: usize, n: usize) -> Result<u64, SqliteError> {
    let s = b.get(pos..pos + n).ok_or(Malformed("field past the end"))?;
    Ok(s.iter().fold(0u64, |v, x| (v << 8) | u64::from(*x)))
}

impl<'a> Db<'a> {
    fn open(bytes: &'a [u8]) -> Result<Db<'a>, SqliteError> {
        if bytes.len() < 100 || &bytes[..16] != b"SQLite format 3\0" {
            return Err(SqliteError::NotSqlite);
        }
        let page_size = match be(bytes, 16, 2)? {
            1 => 65_536,
            n if n >= 512 && n.is_power_of_two() => n as usize,
            _ => return Err(Malformed("page size")),
        };
        let reserved = bytes[20] as usize;
        let usable = page_size
            .checked_sub(reserved)
            .filter(|u| *u >= 480)
            .ok_or(Malformed("usable size"))?;
        Ok(Db {
            bytes,
            page_size,
            usable,
            pages: bytes.len() / page_size,
        })
    }

    fn page(&self, n: u64) -> Result<&'a [u8], SqliteError> {
        let n = usize::try_from(n).map_err(|_| Malformed("page number"))?;
        if n == 0 || n > self.pages {
            return Err(Malformed("page number out of range"));
        }
        Ok(&self.bytes[(n - 1) * self.page_size..n * self.page_size])
    }

    /// Every row (rowid, payload) of the table b-tree rooted at `root`.
    fn rows(&self, root: u64) -> Result<Vec<(i64, Vec<u8>)>, SqliteError> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        let mut visited = 0usize;
        while let Some(n) = stack.pop() {
            visited += 1;
            if visited > self.pages {
                return Err(Malformed("b-tree loops"));
            }
            let page = self.page(n)?;
            let h = if n == 1 { 100 } else { 0 };
            let kind = *page.get(h).ok_or(Malformed("page header"))?;
            let cells = be(page, h + 3, 2)? as usize;
            let (header_len, interior) = match kind {
                0x0d => (8, false),
                0x05 => (12, true),
                _ => return Err(Malformed("not a table b-tree page")),
            };
            let mut children = Vec::new();
            for i in 0..cells {
                let mut pos = be(page, h + header_len + 2 * i, 2)? as usize;
                if interior {
                    children.push(be(page, pos, 4)?);
                    continue;
                }
                let size = usize::try_from(varint(page, &mut pos)?).map_err(|_| Malformed("payload size"))?;
                let rowid = varint(page, &mut pos)? as i64;
                out.push((rowid, self.payload(page, pos, size)?));
            }
            if interior {
                children.push(be(page, h + 8, 4)?);
                // Visited in key order: the stack pops the last pushed first.
                stack.extend(children.into_iter().rev());
            }
        }
        Ok(out)
    }

    /// A leaf cell's payload of `size` bytes starting at `pos`, with its
    /// overflow pages.
    fn payload(&self, page: &[u8], pos: usize, size: usize) -> Result<Vec<u8>, SqliteError> {
        let u = self.usable;
        let x = u - 35;
        if size <= x {
            return Ok(page
                .get(pos..pos + size)
                .ok_or(Malformed("cell past the page"))?
                .to_vec());
        }
        if size > self.bytes.len() {
            return Err(Malformed("payload larger than the file"));
        }
        let m = ((u - 12) * 32 / 255) - 23;
        let k = m + ((size - m) % (u - 4));
        let local = if k <= x { k } else { m };
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(page.get(pos..pos + local).ok_or(Malformed("cell past the page"))?);
        let mut next = be(page, pos + local, 4)?;
        let mut hops = 0;
        while out.len() < size {
            hops += 1;
            if next == 0 || hops > self.pages {
                return Err(Malformed("overflow chain"));
            }
            let p = self.page(next)?;
            next = be(p, 0, 4)?;
            let take = (size - out.len()).min(u - 4);
            out.extend_from_slice(&p[4..4 + take]);
        }
        Ok(out)
    }
}

/// Decodes a record (the payload of a row) into values.
pub fn record(payload: &[u8]) -> Result<Vec<Value>, SqliteError> {
    let mut pos = 0;
    let header_len = usize::try_from(varint(payload, &mut pos)?).map_err(|_| Malformed("record header"))?;
    if header_len > payload.len() {
        return Err(Malformed("record header past the end"));
    }
    let mut types = Vec::new();
    while pos < header_len {
        types.push(varint(payload, &mut pos)?);
    }
    let mut body = header_len;
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let len = match t {
            0 | 8 | 9 => 0,
            1..=6 => [0, 1, 2, 3, 4, 6, 8][t as usize],
            7 => 8,
            10 | 11 => return Err(Malformed("reserved serial type")),
            n => usize::try_from((n - 12 - (n % 2)) / 2).map_err(|_| Malformed("length"))?,
        };
        let bytes = payload.get(body..body + len).ok_or(Malformed("value past the end"))?;
        body += len;
        out.push(match t {
            0 => Value::Null,
            8 => Value::Int(0),
            9 => Value::Int(1),
            1..=6 => {
                // Big-endian two's complement of `len` bytes.
                let raw = bytes.iter().fold(0i64, |v, b| (v << 8) | i64::from(*b));
                let shift = 64 - 8 * len as u32;
                Value::Int((raw << shift) >> shift)
            }
            7 => Value::Float(f64::from_bits(be(bytes, 0, 8)?)),
            n if n % 2 == 0 => Value::Blob(bytes.to_vec()),
            _ => Value::Text(bytes.to_vec()),
        });
    }
    Ok(out)
}

/// Every row of table `name`: (rowid, values).
pub fn table_rows(bytes: &[u8], name: &str) -> Result<Vec<(i64, Vec<Value>)>, SqliteError> {
    let db = Db::open(bytes)?;
    // sqlite_master: type, name, tbl_name, rootpage, sql.
    let root = db
        .rows(1)?
        .into_iter()
        .filter_map(|(_, p)| record(&p).ok())
        .find_map(|v| match (v.first(), v.get(1), v.get(3)) {
            (Some(Value::Text(t)), Some(Value::Text(n)), Some(Value::Int(root)))
                if t == b"table" && n == name.as_bytes() =>
            {
                Some(*root)
            }
            _ => None,
        })
        .ok_or_else(|| SqliteError::NoTable(name.to_owned()))?;
    db.rows(root as u64)?
        .into_iter()
        .map(|(rowid, p)| Ok((rowid, record(&p)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rpm/rpmdb.sqlite"))
            .unwrap()
    }

    #[test]
    fn every_row_of_a_multi_page_table_with_overflow() {
        let rows = table_rows(&fixture(), "Packages").unwrap();
        assert_eq!(rows.len(), 303);
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(ids, (1..=303).collect::<Vec<_>>(), "in rowid order");
        // hnum is the rowid (stored as NULL), blob the header.
        assert_eq!(rows[0].1[0], Value::Null);
        let Value::Blob(big) = &rows[2].1[1] else {
            panic!("{:?}", rows[2].1)
        };
        assert!(big.len() > 4096 * 4, "the overflowing header: {}", big.len());
        assert!(matches!(table_rows(&fixture(), "Nope"), Err(SqliteError::NoTable(_))));
    }

    #[test]
    fn malformed_files_are_errors() {
        assert_eq!(table_rows(b"hello", "Packages"), Err(SqliteError::NotSqlite));
        let good = fixture();
        // Truncated, and every byte of the first pages flipped in turn: an
        // error or a result, never a panic.
        let _ = table_rows(&good[..5000], "Packages");
        for i in (0..good.len().min(3 * 4096)).step_by(7) {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = table_rows(&bad, "Packages");
        }
    }

    #[test]
    fn records_decode_every_serial_type() {
        // header: len 6, types: 1 (i8), 2 (i16), 8 (0), 9 (1), 19 (text 3), 16 (blob 2)
        let rec = [7u8, 1, 2, 8, 9, 19, 16, 0xff, 0x01, 0x00, b'a', b'b', b'c', 1, 2];
        assert_eq!(
            record(&rec).unwrap(),
            vec![
                Value::Int(-1),
                Value::Int(256),
                Value::Int(0),
                Value::Int(1),
                Value::Text(b"abc".to_vec()),
                Value::Blob(vec![1, 2]),
            ]
        );
        assert!(record(&[3, 19, 19]).is_err());
    }
}
