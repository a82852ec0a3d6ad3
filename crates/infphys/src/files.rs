//! CSV and Parquet writers for result frames.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};

fn create(path: &Path) -> Result<File> {
    File::create(path).map_err(|source| Error::Io {
        action: "failed to create",
        path: path.display().to_string(),
        source,
    })
}

/// Writes `df` as CSV with a header row.
pub fn write_csv(df: &DataFrame, path: &Path) -> Result<()> {
    let mut file = create(path)?;
    let mut df = df.clone();
    CsvWriter::new(&mut file)
        .include_header(true)
        .finish(&mut df)?;
    Ok(())
}

/// Writes `df` as Parquet.
pub fn write_parquet(df: &DataFrame, path: &Path) -> Result<()> {
    let file = create(path)?;
    let mut df = df.clone();
    ParquetWriter::new(file).finish(&mut df)?;
    Ok(())
}

/// Reads a CSV file written by [`write_csv`].
pub fn read_csv(path: &Path) -> Result<DataFrame> {
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))?
        .finish()?;
    Ok(df)
}
