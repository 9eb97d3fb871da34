//! How a Rust value is stored in Arrow columns: one [`Codec`] per kind of
//! value, chosen by the value's type ([`Native`]) unless a record's
//! declaration names another (`as Time`). The [`crate::columns!`] macro
//! puts codecs together into a struct of columns.
//!
//! Every reader finds its columns by name and checks each column's type and
//! nulls once per batch; after that, reading a value cannot fail except for
//! text that names no variant of its enum.

use std::marker::PhantomData;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, ListBuilder, PrimitiveBuilder, StringBuilder, TimestampNanosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Int32Type, Int64Type, TimestampNanosecondType, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, ListArray, PrimitiveArray, RecordBatch, StringArray, StructArray,
    TimestampNanosecondArray,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{ArrowError, DataType, Field, Fields, TimeUnit};

/// A shared string: rows of one batch share their agent, host, container and
/// interned strings instead of copying them.
pub type Str = Arc<str>;

/// How values of one kind are written to and read from Arrow columns.
pub trait Codec {
    /// The Rust value.
    type Value;
    /// Collects values until the batch is built.
    type Builder;
    /// The checked columns of one batch.
    type Reader;
    /// Appends the fields of the column(s): `name` is the declared column
    /// name (a [`Flat`] group has its own names and ignores it).
    fn fields(name: &'static str, out: &mut Vec<Field>);
    fn builder() -> Self::Builder;
    fn append(b: &mut Self::Builder, v: &Self::Value);
    /// Appends the built column(s) in [`Codec::fields`] order and resets the builder.
    fn finish(b: &mut Self::Builder, out: &mut Vec<ArrayRef>);
    /// The column(s) named so in `batch`, checked: `None` if absent; an
    /// error if of another type, or with nulls where none may be.
    fn reader(batch: &RecordBatch, name: &'static str) -> Result<Option<Self::Reader>, ArrowError>;
    fn read(r: &Self::Reader, row: usize) -> Result<Self::Value, ArrowError>;
    /// About what the value takes in built columns, in bytes: what the byte
    /// budgets and flush-by-size charge for it.
    fn size(v: &Self::Value) -> usize;
}

/// The codec a Rust type uses unless its declaration names another.
pub trait Native {
    type Codec: Codec<Value = Self>;
}

/// A struct of columns (what [`crate::columns!`] declares): a record row,
/// or a group of columns flattened into rows ([`super::Attribution`]).
pub trait Columns: Sized {
    type Builder;
    type Reader;
    fn fields(out: &mut Vec<Field>);
    fn builder() -> Self::Builder;
    fn append(b: &mut Self::Builder, v: &Self);
    fn finish(b: &mut Self::Builder, out: &mut Vec<ArrayRef>);
    /// Every column, found by name: a missing column without a default for
    /// older batches is an error.
    fn reader(batch: &RecordBatch) -> Result<Self::Reader, ArrowError>;
    fn read(r: &Self::Reader, row: usize) -> Result<Self, ArrowError>;
    /// About what the row takes in built columns, in bytes.
    fn size(&self) -> usize;
}

/// The column `name` of `batch` if present, checked for type and nulls.
pub fn column<'a>(
    batch: &'a RecordBatch,
    name: &str,
    data_type: &DataType,
    nullable: bool,
) -> Result<Option<&'a ArrayRef>, ArrowError> {
    let Some(c) = batch.column_by_name(name) else {
        return Ok(None);
    };
    if c.data_type() != data_type {
        return Err(ArrowError::SchemaError(format!(
            "column {name} is {}, not {data_type}",
            c.data_type()
        )));
    }
    if !nullable && c.null_count() > 0 {
        return Err(ArrowError::SchemaError(format!(
            "column {name} holds nulls where none may be"
        )));
    }
    Ok(Some(c))
}

/// The error for a column a batch lacks.
pub fn missing(name: &str) -> ArrowError {
    ArrowError::SchemaError(format!("no column {name}"))
}

/// Non-null text.
#[derive(Debug)]
pub struct Utf8;

impl Codec for Utf8 {
    type Value = Str;
    type Builder = StringBuilder;
    type Reader = StringArray;
    fn fields(name: &'static str, out: &mut Vec<Field>) {
        out.push(Field::new(name, DataType::Utf8, false));
    }
    fn builder() -> StringBuilder {
        StringBuilder::new()
    }
    fn append(b: &mut StringBuilder, v: &Str) {
        b.append_value(v);
    }
    fn finish(b: &mut StringBuilder, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(b.finish()));
    }
    fn reader(batch: &RecordBatch, name: &'static str) -> Result<Option<StringArray>, ArrowError> {
        Ok(column(batch, name, &DataType::Utf8, false)?.map(|c| c.as_string::<i32>().clone()))
    }
    fn read(r: &StringArray, row: usize) -> Result<Str, ArrowError> {
        Ok(Str::from(r.value(row)))
    }
    fn size(v: &Str) -> usize {
        4 + v.len()
    }
}

/// Text or null.
#[derive(Debug)]
pub struct OptUtf8;

impl Codec for OptUtf8 {
    type Value = Option<Str>;
    type Builder = StringBuilder;
    type Reader = StringArray;
    fn fields(name: &'static str, out: &mut Vec<Field>) {
        out.push(Field::new(name, DataType::Utf8, true));
    }
    fn builder() -> StringBuilder {
        StringBuilder::new()
    }
    fn append(b: &mut StringBuilder, v: &Option<Str>) {
        b.append_option(v.as_deref());
    }
    fn finish(b: &mut StringBuilder, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(b.finish()));
    }
    fn reader(batch: &RecordBatch, name: &'static str) -> Result<Option<StringArray>, ArrowError> {
        Ok(column(batch, name, &DataType::Utf8, true)?.map(|c| c.as_string::<i32>().clone()))
    }
    fn read(r: &StringArray, row: usize) -> Result<Option<Str>, ArrowError> {
        Ok(r.is_valid(row).then(|| Str::from(r.value(row))))
    }
    fn size(v: &Option<Str>) -> usize {
        4 + v.as_ref().map_or(0, |s| s.len())
    }
}

/// A non-null number.
#[derive(Debug)]
pub struct Prim<T>(PhantomData<T>);

impl<T: ArrowPrimitiveType> Codec for Prim<T> {
    type Value = T::Native;
    type Builder = PrimitiveBuilder<T>;
    type Reader = PrimitiveArray<T>;
    fn fields(name: &'static str, out: &mut Vec<Field>) {
        out.push(Field::new(name, T::DATA_TYPE, false));
    }
    fn builder() -> PrimitiveBuilder<T> {
        PrimitiveBuilder::new()
    }
    fn append(b: &mut PrimitiveBuilder<T>, v: &T::Native) {
        b.append_value(*v);
    }
    fn finish(b: &mut PrimitiveBuilder<T>, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(b.finish()));
    }
    fn reader(batch: &RecordBatch, name: &'static str) -> Result<Option<PrimitiveArray<T>>, ArrowError> {
        Ok(column(batch, name, &T::DATA_TYPE, false)?.map(|c| c.as_primitive::<T>().clone()))
    }
    fn read(r: &PrimitiveArray<T>, row: usize) -> Result<T::Native, ArrowError> {
        Ok(r.value(row))
    }
    fn size(_: &T::Native) -> usize {
        size_of::<T::Native>()
    }
}

/// A number or null.
#[derive(Debug)]
pub struct OptPrim<T>(PhantomData<T>);

impl<T: ArrowPrimitiveType> Codec for OptPrim<T> {
    type Value = Option<T::Native>;
    type Builder = PrimitiveBuilder<T>;
    type Reader = PrimitiveArray<T>;
    fn fields(name: &'static str, out: &mut Vec<Field>) {
        out.push(Field::new(name, T::DATA_TYPE, true));
    }
    fn builder() -> PrimitiveBuilder<T> {
        PrimitiveBuilder::new()
    }
    fn append(b: &mut PrimitiveBuilder<T>, v: &Option<T::Native>) {
        b.append_option(*v);
    }
    fn finish(b: &mut PrimitiveBuilder<T>, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(b.finish()));
    }
    fn reader(batch: &RecordBatch, name: &'static str) -> Result<Option<PrimitiveArray<T>>, ArrowError> {
        Ok(column(batch, name, &T::DATA_TYPE, true)?.map(|c| c.as_primitive::<T>().clone()))
    }
    fn read(r: &PrimitiveArray<T>, row: usize) -> Result<Option<T::Native>, ArrowError> {
        Ok(r.is_valid(row).then(|| r.value(row)))
    }
    fn size(_: &Option<T::Native>) -> usize {
        size_of::<T::Native>()
    }
}

/// A point in time: Unix nanoseconds in an `i64`, a UTC timestamp column.
#[derive(Debug)]
pub struct Time;

fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

impl Codec for Time {
    type Value = i64;
    type Builder = TimestampNanosecondBuilder;
    type Reader = TimestampNanosecondArray;
    fn fields(name: &'static str, out: &mut Vec<Field>) {
        out.push(Field::new(name, time_type(), false));
    }
    fn builder() -> TimestampNanosecondBuilder {
        TimestampNanosecondBuilder::new().with_timezone("UTC")
    }
    fn append(b: &mut TimestampNanosecondBuilder, v: &i64) {
        b.append_value(*v);
    }
    fn finish(b: &mut TimestampNanosecondBuilder, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(b.finish()));
    }
    fn reader(batch: &RecordBatch, name: &'static str) -> Result<Option<TimestampNanosecondArray>, ArrowError> {
        Ok(column(batch, name, &time_type(), false)?.map(|c| c.as_primitive::<TimestampNanosecondType>().clone()))
    }
    fn read(r: &TimestampNanosecondArray, row: usize) -> Result<i64, ArrowError> {
        Ok(r.value(row))
    }
    fn size(_: &i64) -> usize {
        8
    }
}

/// A non-null flag.
#[derive(Debug)]
pub struct Bool;

impl Codec for Bool {
    type Value = bool;
    type Builder = BooleanBuilder;
    type Reader = BooleanArray;
    fn fields(name: &'static str, out: &mut Vec<Field>) {
        out.push(Field::new(name, DataType::Boolean, false));
    }
    fn builder() -> BooleanBuilder {
        BooleanBuilder::new()
    }
    fn append(b: &mut BooleanBuilder, v: &bool) {
        b.append_value(*v);
    }
    fn finish(b: &mut BooleanBuilder, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(b.finish()));
    }
    fn reader(batch: &RecordBatch, name: &'static str) -> Result<Option<BooleanArray>, ArrowError> {
        Ok(column(batch, name, &DataType::Boolean, false)?.map(|c| c.as_boolean().clone()))
    }
    fn read(r: &BooleanArray, row: usize) -> Result<bool, ArrowError> {
        Ok(r.value(row))
    }
    fn size(_: &bool) -> usize {
        1
    }
}

/// A non-null list of text; `NULLABLE_ITEMS` is the nullability its item
/// field declares (no item is ever written null).
#[derive(Debug)]
pub struct StrList<const NULLABLE_ITEMS: bool>;

impl<const NULLABLE_ITEMS: bool> StrList<NULLABLE_ITEMS> {
    fn item() -> Arc<Field> {
        Arc::new(Field::new("item", DataType::Utf8, NULLABLE_ITEMS))
    }
}

impl<const NULLABLE_ITEMS: bool> Codec for StrList<NULLABLE_ITEMS> {
    type Value = Vec<Str>;
    type Builder = ListBuilder<StringBuilder>;
    type Reader = ListArray;
    fn fields(name: &'static str, out: &mut Vec<Field>) {
        out.push(Field::new(name, DataType::List(Self::item()), false));
    }
    fn builder() -> ListBuilder<StringBuilder> {
        ListBuilder::new(StringBuilder::new()).with_field(Self::item())
    }
    fn append(b: &mut ListBuilder<StringBuilder>, v: &Vec<Str>) {
        for s in v {
            b.values().append_value(s);
        }
        b.append(true);
    }
    fn finish(b: &mut ListBuilder<StringBuilder>, out: &mut Vec<ArrayRef>) {
        out.push(ArrayBuilder::finish(b));
    }
    fn reader(batch: &RecordBatch, name: &'static str) -> Result<Option<ListArray>, ArrowError> {
        let Some(c) = column(batch, name, &DataType::List(Self::item()), false)? else {
            return Ok(None);
        };
        let list = c.as_list::<i32>();
        if list.values().null_count() > 0 {
            return Err(ArrowError::SchemaError(format!("column {name} holds null items")));
        }
        Ok(Some(list.clone()))
    }
    fn read(r: &ListArray, row: usize) -> Result<Vec<Str>, ArrowError> {
        let items = r.value(row);
        let items = items.as_string::<i32>();
        Ok(items.iter().map(|s| Str::from(s.unwrap_or_default())).collect())
    }
    fn size(v: &Vec<Str>) -> usize {
        4 + v.iter().map(|s| 4 + s.len()).sum::<usize>()
    }
}

/// A group of columns ([`Columns`]) flattened into the row that holds it.
#[derive(Debug)]
pub struct Flat<G>(PhantomData<G>);

impl<G: Columns> Codec for Flat<G> {
    type Value = G;
    type Builder = G::Builder;
    type Reader = G::Reader;
    fn fields(_: &'static str, out: &mut Vec<Field>) {
        G::fields(out);
    }
    fn builder() -> G::Builder {
        G::builder()
    }
    fn append(b: &mut G::Builder, v: &G) {
        G::append(b, v);
    }
    fn finish(b: &mut G::Builder, out: &mut Vec<ArrayRef>) {
        G::finish(b, out);
    }
    fn reader(batch: &RecordBatch, _: &'static str) -> Result<Option<G::Reader>, ArrowError> {
        G::reader(batch).map(Some)
    }
    fn read(r: &G::Reader, row: usize) -> Result<G, ArrowError> {
        G::read(r, row)
    }
    fn size(v: &G) -> usize {
        v.size()
    }
}

/// A non-null list of non-null structs, each a row of the group `G`.
#[derive(Debug)]
pub struct StructList<G>(PhantomData<G>);

/// Builds a [`StructList`] column.
#[derive(Debug)]
pub struct StructListBuilder<B> {
    items: B,
    offsets: Vec<i32>,
}

/// The checked column of a [`StructList`].
#[derive(Debug)]
pub struct StructListReader<R> {
    offsets: OffsetBuffer<i32>,
    items: R,
}

impl<G: Columns> StructList<G> {
    fn item() -> Arc<Field> {
        let mut fields = Vec::new();
        G::fields(&mut fields);
        Arc::new(Field::new("item", DataType::Struct(Fields::from(fields)), false))
    }
}

impl<G: Columns> Codec for StructList<G> {
    type Value = Vec<G>;
    type Builder = StructListBuilder<G::Builder>;
    type Reader = StructListReader<G::Reader>;
    fn fields(name: &'static str, out: &mut Vec<Field>) {
        out.push(Field::new(name, DataType::List(Self::item()), false));
    }
    fn builder() -> Self::Builder {
        StructListBuilder {
            items: G::builder(),
            offsets: vec![0],
        }
    }
    fn append(b: &mut Self::Builder, v: &Vec<G>) {
        let last = b.offsets.last().copied().unwrap_or(0);
        // Past i32 offsets (2^31 items, some 48 GiB by `size`, far over
        // any batch budget) the row's list is left empty rather than built wrong.
        let next = i32::try_from(v.len()).ok().and_then(|n| last.checked_add(n));
        if next.is_some() {
            for item in v {
                G::append(&mut b.items, item);
            }
        }
        b.offsets.push(next.unwrap_or(last));
    }
    fn finish(b: &mut Self::Builder, out: &mut Vec<ArrayRef>) {
        let mut columns = Vec::new();
        G::finish(&mut b.items, &mut columns);
        let offsets = std::mem::replace(&mut b.offsets, vec![0]);
        let mut fields = Vec::new();
        G::fields(&mut fields);
        let items = StructArray::new(Fields::from(fields), columns, None);
        out.push(Arc::new(ListArray::new(
            Self::item(),
            OffsetBuffer::new(offsets.into()),
            Arc::new(items),
            None,
        )));
    }
    fn reader(batch: &RecordBatch, name: &'static str) -> Result<Option<Self::Reader>, ArrowError> {
        let Some(c) = column(batch, name, &DataType::List(Self::item()), false)? else {
            return Ok(None);
        };
        let list = c.as_list::<i32>();
        let items = list.values().as_struct();
        if items.null_count() > 0 {
            return Err(ArrowError::SchemaError(format!("column {name} holds null items")));
        }
        let items = RecordBatch::from(items.clone());
        Ok(Some(StructListReader {
            offsets: list.offsets().clone(),
            items: G::reader(&items)?,
        }))
    }
    fn read(r: &Self::Reader, row: usize) -> Result<Vec<G>, ArrowError> {
        let (start, end) = (r.offsets[row], r.offsets[row + 1]);
        (start..end).map(|i| G::read(&r.items, i as usize)).collect()
    }
    fn size(v: &Vec<G>) -> usize {
        4 + v.iter().map(Columns::size).sum::<usize>()
    }
}

/// An enum stored as its text ([`TextEnum`]).
#[derive(Debug)]
pub struct Text<K>(PhantomData<K>);

/// An enum whose variants are stored as fixed text.
pub trait TextEnum: Copy + Sized + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

impl<K: TextEnum> Codec for Text<K> {
    type Value = K;
    type Builder = StringBuilder;
    type Reader = (StringArray, &'static str);
    fn fields(name: &'static str, out: &mut Vec<Field>) {
        out.push(Field::new(name, DataType::Utf8, false));
    }
    fn builder() -> StringBuilder {
        StringBuilder::new()
    }
    fn append(b: &mut StringBuilder, v: &K) {
        b.append_value(v.as_str());
    }
    fn finish(b: &mut StringBuilder, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(b.finish()));
    }
    fn reader(batch: &RecordBatch, name: &'static str) -> Result<Option<Self::Reader>, ArrowError> {
        Ok(column(batch, name, &DataType::Utf8, false)?.map(|c| (c.as_string::<i32>().clone(), name)))
    }
    fn read((r, name): &Self::Reader, row: usize) -> Result<K, ArrowError> {
        let s = r.value(row);
        K::parse(s).ok_or_else(|| ArrowError::InvalidArgumentError(format!("unknown {name} {s:?}")))
    }
    fn size(v: &K) -> usize {
        4 + v.as_str().len()
    }
}

impl Native for Str {
    type Codec = Utf8;
}
impl Native for Option<Str> {
    type Codec = OptUtf8;
}
impl Native for u16 {
    type Codec = Prim<UInt16Type>;
}
impl Native for u32 {
    type Codec = Prim<UInt32Type>;
}
impl Native for u64 {
    type Codec = Prim<UInt64Type>;
}
impl Native for i64 {
    type Codec = Prim<Int64Type>;
}
impl Native for Option<i32> {
    type Codec = OptPrim<Int32Type>;
}
impl Native for bool {
    type Codec = Bool;
}
impl Native for Vec<Str> {
    type Codec = StrList<true>;
}
