//! Which catalog and storage the lake uses, and opening them.
//!
//! - **Embedded** ([`CatalogKind::Sql`] with a `sqlite:` URI): iceberg's SQL
//!   catalog in a sqlite file, no server. Processes on one host may share
//!   it (sqlite locks the file; the catalog's compare-and-swap orders
//!   commits).
//! - **REST** ([`CatalogKind::Rest`]): any Iceberg REST catalog (Polaris,
//!   Gravitino, Nessie, Lakekeeper, AWS Glue's and S3 Tables' REST
//!   endpoints); the catalog serializes commits.
//!
//! The warehouse (where data and metadata files go) is a `file://` path or
//! an `s3://bucket/prefix`; S3 settings are the `s3.*` properties of
//! iceberg-rust (`s3.endpoint`, `s3.region`, `s3.access-key-id`,
//! `s3.secret-access-key`, `s3.path-style-access`), passed in
//! [`Settings::properties`].

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::io::{LocalFsStorageFactory, StorageFactory};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent};
use iceberg_catalog_rest::{REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE, RestCatalogBuilder};
use iceberg_catalog_sql::{
    SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI, SQL_CATALOG_PROP_WAREHOUSE, SqlBindStyle, SqlCatalogBuilder,
};
use iceberg_storage_opendal::OpenDalStorageFactory;

use crate::fence::FencingCatalog;
use crate::{Error, Result};

/// The catalog's name inside its own store (the SQL catalog keys its rows
/// by it).
pub const CATALOG_NAME: &str = "glasshouse";

/// Which catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogKind {
    /// iceberg's SQL catalog; `uri` is a sqlx URI, e.g.
    /// `sqlite:///var/lib/glasshouse/lake/catalog.db?mode=rwc`.
    Sql { uri: String },
    /// An Iceberg REST catalog at `uri` (e.g. `http://catalog:8181`).
    Rest { uri: String },
}

/// Where the lake is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub catalog: CatalogKind,
    /// Data and metadata location: `file:///abs/path` or `s3://bucket/prefix`.
    pub warehouse: String,
    /// The namespace of the lake's tables.
    pub namespace: String,
    /// Catalog and storage properties (`s3.*`, a REST catalog's `token` or
    /// `credential`), passed to iceberg-rust as they are.
    pub properties: HashMap<String, String>,
    /// With a REST catalog's `credential` (OAuth2 client credentials): how
    /// often a new token is fetched. iceberg-rust 0.10.1 never renews one
    /// itself, so without this a long-running writer or query service is
    /// refused once its token expires (SeaweedFS's last an hour).
    pub token_refresh: Option<std::time::Duration>,
}

/// An open catalog and the lake's namespace in it.
#[derive(Debug, Clone)]
pub struct Warehouse {
    pub(crate) catalog: Arc<FencingCatalog>,
    pub(crate) namespace: NamespaceIdent,
    /// Tokens fetched by the renewal task (REST with `credential`).
    pub token_renewals: Arc<std::sync::atomic::AtomicU64>,
}

/// The storage behind `warehouse`'s scheme.
fn storage(warehouse: &str) -> Result<Arc<dyn StorageFactory>> {
    if warehouse.starts_with("file://") {
        Ok(Arc::new(LocalFsStorageFactory))
    } else if warehouse.starts_with("s3://") || warehouse.starts_with("s3a://") {
        Ok(Arc::new(OpenDalStorageFactory::S3 {
            customized_credential_load: None,
        }))
    } else {
        Err(Error::Settings(format!(
            "warehouse {warehouse:?}: expected file:///path or s3://bucket/prefix"
        )))
    }
}

/// A REST catalog's failure, named. A refused token or credential (401,
/// 403) is the operator's to fix: a settings error. Anything else (not
/// reachable, a 5xx) keeps its iceberg kind, with the catalog's URL added.
fn rest_error(uri: &str, e: iceberg::Error) -> Error {
    // iceberg-rust keeps the HTTP status only in the error's text.
    let text = e.to_string();
    match ["401 Unauthorized", "403 Forbidden"]
        .into_iter()
        .find(|status| text.contains(&format!("status: {status}")))
    {
        Some(status) => Error::Settings(format!(
            "rest catalog {uri} refused the token or credential ({status}): {text}"
        )),
        None => {
            // The root cause (e.g. "Connection refused") is below the HTTP
            // client's error, which iceberg's text stops at.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            let cause = cause.to_string();
            e.with_context("catalog", uri).with_context("cause", cause).into()
        }
    }
}

impl Warehouse {
    /// Opens the catalog and creates the namespace if it is missing.
    pub async fn open(settings: &Settings) -> Result<Warehouse> {
        let storage = storage(&settings.warehouse)?;
        let mut props = settings.properties.clone();
        let renewals = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let inner: Arc<dyn Catalog> = match &settings.catalog {
            CatalogKind::Sql { uri } => {
                props.insert(SQL_CATALOG_PROP_URI.to_owned(), uri.clone());
                props.insert(SQL_CATALOG_PROP_WAREHOUSE.to_owned(), settings.warehouse.clone());
                // sqlite's placeholders are `?`.
                props
                    .entry(SQL_CATALOG_PROP_BIND_STYLE.to_owned())
                    .or_insert_with(|| SqlBindStyle::QMark.to_string());
                Arc::new(
                    SqlCatalogBuilder::default()
                        .with_storage_factory(storage)
                        .load(CATALOG_NAME, props)
                        .await?,
                )
            }
            CatalogKind::Rest { uri } => {
                props.insert(REST_CATALOG_PROP_URI.to_owned(), uri.clone());
                props.insert(REST_CATALOG_PROP_WAREHOUSE.to_owned(), settings.warehouse.clone());
                let catalog = RestCatalogBuilder::default()
                    .with_storage_factory(storage)
                    .load(CATALOG_NAME, props)
                    .await
                    .map_err(|e| rest_error(uri, e))?;
                // The first requests (the catalog's config, then a GET, whose
                // refusal carries the catalog's own words; the HEAD of
                // `namespace_exists` has none): a refused token or an
                // unreachable catalog is named here, at open.
                catalog.list_namespaces(None).await.map_err(|e| rest_error(uri, e))?;
                let catalog = Arc::new(catalog);
                if let (Some(every), true) = (settings.token_refresh, settings.properties.contains_key("credential")) {
                    renew_tokens(Arc::downgrade(&catalog), every, uri.clone(), renewals.clone());
                }
                catalog
            }
        };
        let namespace = NamespaceIdent::new(settings.namespace.clone());
        if !inner.namespace_exists(&namespace).await?
            && let Err(e) = inner.create_namespace(&namespace, HashMap::new()).await
            // Another writer may have created it first.
            && !inner.namespace_exists(&namespace).await?
        {
            return Err(e.into());
        }
        Ok(Warehouse {
            catalog: Arc::new(FencingCatalog::new(inner)),
            namespace,
            token_renewals: renewals,
        })
    }
}

/// Fetches a new token of `catalog` (from its `credential`) every `every`
/// until the catalog is dropped. A failed fetch keeps the current token and
/// is tried again at the next period.
fn renew_tokens(
    catalog: std::sync::Weak<iceberg_catalog_rest::RestCatalog>,
    every: std::time::Duration,
    uri: String,
    renewals: Arc<std::sync::atomic::AtomicU64>,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(catalog) = catalog.upgrade() else { break };
            match catalog.regenerate_token().await {
                Ok(()) => {
                    renewals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(catalog = %uri, "rest catalog token renewed");
                }
                Err(e) => {
                    tracing::warn!(catalog = %uri, error = %e, "rest catalog token not renewed; the current one is kept")
                }
            }
        }
    });
}
