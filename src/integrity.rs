//! `fleetpulse check` and `fleetpulse repair`: the full integrity check of a data directory and
//! the salvage of a damaged embedded database, printed for an operator.

use std::path::Path;

use anyhow::Context as _;
use fleetpulse_store::embedded::{DB_FILE, integrity};
use fleetpulse_store::spool;

/// Checks the embedded database and the spool under `data_dir`; `Err` (exit status 1) on damage.
pub fn check(data_dir: &Path) -> anyhow::Result<()> {
    let mut damaged = 0usize;
    if data_dir.join(DB_FILE).exists() {
        let report = integrity::check(data_dir).context("checking the embedded database")?;
        for line in &report.checked {
            println!("checked: {line}");
        }
        for problem in &report.problems {
            println!("DAMAGED: {problem}");
        }
        damaged += report.problems.len();
    } else {
        println!("no embedded database ({} not found)", data_dir.join(DB_FILE).display());
    }
    let spool_dir = data_dir.join("spool");
    if spool_dir.is_dir() {
        let found = spool::check(&spool_dir).context("checking the spool")?;
        println!(
            "checked: spool {}: {} segments, {} valid records",
            spool_dir.display(),
            found.segments,
            found.records
        );
        if found.corrupt > 0 || found.torn > 0 {
            println!(
                "DAMAGED: spool {}: {} corrupt regions and {} torn segment tails (the server skips and counts \
                 them on start: the records in them are lost, every other record is delivered)",
                spool_dir.display(),
                found.corrupt,
                found.torn
            );
            damaged += 1;
        }
    }
    if damaged > 0 {
        anyhow::bail!(
            "{damaged} problems found in {}: restore it from a backup, or run `fleetpulse repair --data-dir {}`",
            data_dir.display(),
            data_dir.display()
        );
    }
    println!("ok: no damage found in {}", data_dir.display());
    Ok(())
}

/// Salvages the embedded database under `data_dir` into a new file and prints what was lost.
pub fn repair(data_dir: &Path) -> anyhow::Result<()> {
    let report = integrity::repair(data_dir).context("repairing the embedded database")?;
    println!("the damaged files were moved to {}(-wal)", report.damaged_copy.display());
    let mut lost_total = 0u64;
    let mut unknown = false;
    for (table, copied, lost) in &report.tables {
        match lost {
            Some(0) => {}
            Some(n) => {
                println!("{table}: {copied} rows salvaged, {n} lost");
                lost_total += n;
            }
            None => {
                println!(
                    "{table}: {copied} rows salvaged, an unknown number lost (the damaged table cannot be counted)"
                );
                unknown = true;
            }
        }
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    let copied: u64 = report.tables.iter().map(|t| t.1).sum();
    println!(
        "repaired: {copied} rows salvaged into {}, {lost_total}{} rows lost",
        data_dir.join(DB_FILE).display(),
        if unknown { "+" } else { "" }
    );
    Ok(())
}
