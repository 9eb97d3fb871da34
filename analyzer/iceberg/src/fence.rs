//! The fence: a catalog wrapper that refuses a commit whose Kafka offset
//! range does not start at the table's high-water mark.
//!
//! iceberg-rust rebuilds a conflicting append on the newest metadata by
//! itself and offers no hook into that rebuild, so the check lives where
//! every attempt passes: [`Catalog::update_table`]. The wrapper loads the
//! table, compares the pending ranges with its `glasshouse.kafka.offset.*`
//! properties and refuses (not retryable) or delegates. It is atomic with
//! the commit: the commit requires the table's `main` branch to be at the
//! snapshot the attempt was built on, and the inner catalog's
//! compare-and-swap checks that; a table that moved after the fence's
//! load fails that requirement and the attempt is made again, fence
//! first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use iceberg::table::Table;
use iceberg::{Catalog, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit, TableCreation, TableIdent};

/// Table property holding the next offset of `partition` (the high-water
/// mark).
pub fn offset_property(partition: i32) -> String {
    format!("glasshouse.kafka.offset.{partition}")
}

/// The high-water mark of every partition in `table`'s properties.
pub fn high_water_marks(table: &Table) -> HashMap<i32, i64> {
    table
        .metadata()
        .properties()
        .iter()
        .filter_map(|(k, v)| {
            let partition = k.strip_prefix("glasshouse.kafka.offset.")?.parse().ok()?;
            Some((partition, v.parse().ok()?))
        })
        .collect()
}

/// The first of `starts` (partition, first offset) that does not begin
/// at its partition's mark in `marks` (0 for a partition without one):
/// (partition, first, mark). A range starting below the mark repeats
/// offsets already in the table; one starting above it would leave the
/// offsets in between out of the table for good.
pub fn off_mark(marks: &HashMap<i32, i64>, starts: impl IntoIterator<Item = (i32, i64)>) -> Option<(i32, i64, i64)> {
    starts.into_iter().find_map(|(partition, first)| {
        let committed = marks.get(&partition).copied().unwrap_or(0);
        (committed != first).then_some((partition, first, committed))
    })
}

/// The first offset of each partition a pending commit of a table covers.
pub(crate) type Pending = Vec<(i32, i64)>;

/// Marks the refusal so the writer can tell it from other errors.
pub(crate) const FENCED: &str = "glasshouse fence:";

/// A catalog whose commits of a table are checked against the pending
/// ranges registered for it.
#[derive(Debug)]
pub struct FencingCatalog {
    inner: Arc<dyn Catalog>,
    pending: Mutex<HashMap<TableIdent, Pending>>,
}

impl FencingCatalog {
    pub fn new(inner: Arc<dyn Catalog>) -> FencingCatalog {
        FencingCatalog {
            inner,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Registers the ranges the next commits of `table` carry (until
    /// [`FencingCatalog::clear`]).
    pub(crate) fn expect(&self, table: &TableIdent, pending: Pending) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(table.clone(), pending);
    }

    pub(crate) fn clear(&self, table: &TableIdent) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(table);
    }

    fn pending(&self, table: &TableIdent) -> Option<Pending> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(table)
            .cloned()
    }
}

#[async_trait]
impl Catalog for FencingCatalog {
    async fn list_namespaces(&self, parent: Option<&NamespaceIdent>) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }

    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }

    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }

    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(namespace).await
    }

    async fn update_namespace(&self, namespace: &NamespaceIdent, properties: HashMap<String, String>) -> Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }

    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(namespace).await
    }

    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }

    async fn create_table(&self, namespace: &NamespaceIdent, creation: TableCreation) -> Result<Table> {
        self.inner.create_table(namespace, creation).await
    }

    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        self.inner.load_table(table).await
    }

    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }

    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.purge_table(table).await
    }

    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }

    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }

    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        if let Some(pending) = self.pending(commit.identifier()) {
            let current = self.inner.load_table(commit.identifier()).await?;
            if let Some((partition, first, committed)) = off_mark(&high_water_marks(&current), pending) {
                return Err(Error::new(
                    ErrorKind::DataInvalid,
                    format!("{FENCED} partition {partition} from {first}, high-water mark {committed}"),
                )
                .with_retryable(false));
            }
        }
        self.inner.update_table(commit).await
    }
}
