//! `tabtune train`'s checkpoints on disk, and Ctrl-C.
//!
//! A checkpoint is a directory `checkpoint-N/` (N: the steps taken) in the
//! run's checkpoint directory: `--out` itself, or `OUT.checkpoints/` beside
//! an `--out OUT.zip`. It holds `state.safetensors` (the whole run state,
//! `tabtune::train::checkpoint`) and the adapter of that step as PEFT loads
//! it (`adapter_model.safetensors`, `adapter_config.json`, `README.md`).
//! It is written into `checkpoint-N.partial/` and renamed when whole, so a
//! crash mid-write leaves the last checkpoint as it was; the oldest beyond
//! `--keep-checkpoints` are then removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use tabtune::train::Session;
use tabtune::train::session::AdapterFiles;
use tabtune::{Error, Result};

use super::files;

/// The run state's file in a checkpoint directory.
pub const STATE: &str = "state.safetensors";

/// Where a run's checkpoints go, for `--out`.
pub fn dir_for(out: &str) -> PathBuf {
    match out.strip_suffix(".zip") {
        Some(stem) => PathBuf::from(format!("{stem}.checkpoints")),
        None => PathBuf::from(out),
    }
}

/// Makes the directory `--out` writes into (and the checkpoints' one) and
/// checks a file can be written there, before anything slow starts.
pub fn prepare_out(out: &str) -> Result<()> {
    let io = |what: &Path, e: std::io::Error| {
        Error::format(what.display(), format!("cannot write here: {e}"))
    };
    let dirs = [
        match out.ends_with(".zip") {
            true => Path::new(out)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            false => PathBuf::from(out),
        },
        dir_for(out),
    ];
    for dir in dirs {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let probe = dir.join(".tabtune-write-check");
        std::fs::write(&probe, b"").map_err(|e| io(&dir, e))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}

/// The checkpoint file `--resume` names: a checkpoint directory, its
/// `state.safetensors`, or a run's checkpoint directory (its latest).
pub fn resolve(path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    if p.join(STATE).is_file() {
        return Ok(p.join(STATE));
    }
    if p.is_dir() {
        return match listed(p)?.pop() {
            Some((_, dir)) => Ok(dir.join(STATE)),
            None => Err(Error::format(
                path,
                "holds no checkpoint-N directory with a state.safetensors",
            )),
        };
    }
    Err(Error::format(path, "no such checkpoint file or directory"))
}

/// Before a run writes checkpoints into `dir`: a new run refuses a
/// directory holding an earlier run's (they would be pruned as older, and
/// `--resume` would pick them); a resumed run removes those after the step
/// it resumes from (its own steps will write them again).
pub fn claim(dir: &Path, resumed_at: Option<usize>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let found = listed(dir)?;
    match resumed_at {
        None => match found.last() {
            Some((n, _)) => Err(Error::format(
                dir.display(),
                format!(
                    "holds checkpoints of an earlier run (up to checkpoint-{n}): go on with it with --resume {}, or choose another --out, or delete them",
                    dir.display()
                ),
            )),
            None => Ok(()),
        },
        Some(step) => {
            for (n, path) in found {
                if n > step {
                    std::fs::remove_dir_all(&path).map_err(|e| {
                        Error::format(path.display(), format!("cannot remove: {e}"))
                    })?;
                }
            }
            Ok(())
        }
    }
}

/// The `checkpoint-N` directories in `dir` that hold a state, by N.
fn listed(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::format(dir.display(), format!("cannot list: {e}")))?;
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().join(STATE).is_file().then(|| (n, e.path()))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Writes the session's run as `checkpoint-N/` in `dir`, then keeps only
/// the `keep` latest. Returns the directory written.
pub async fn save(
    session: &Session,
    adapter: &AdapterFiles,
    dir: &Path,
    keep: usize,
) -> Result<PathBuf> {
    let checkpoint = session.checkpoint().await?;
    let name = format!("checkpoint-{}", checkpoint.step);
    let partial = dir.join(format!("{name}.partial"));
    let done = dir.join(&name);
    let io = |what: &Path, e: std::io::Error| {
        Error::format(what.display(), format!("cannot write the checkpoint: {e}"))
    };
    let _ = std::fs::remove_dir_all(&partial);
    files::write_adapter(&partial.to_string_lossy(), adapter)?;
    std::fs::write(partial.join(STATE), &checkpoint.bytes).map_err(|e| io(&partial, e))?;
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(|e| io(&done, e))?;
    }
    std::fs::rename(&partial, &done).map_err(|e| io(&done, e))?;
    let all = listed(dir)?;
    for (_, old) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(done)
}

/// Set by the first Ctrl-C.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let note = b"\nCtrl-C: the step under way finishes, then a checkpoint is written (Ctrl-C again quits at once)\n";
    // SAFETY: write(2) and signal(2) are async-signal-safe; the second
    // Ctrl-C gets the default action (the process ends).
    unsafe {
        libc::write(2, note.as_ptr().cast(), note.len());
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// From now on the first Ctrl-C asks the run to stop after its step
/// ([`interrupted`]); a second one ends the process.
pub fn catch_interrupt() {
    #[cfg(unix)]
    // SAFETY: installs a handler that only stores an atomic flag and calls
    // async-signal-safe functions.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
