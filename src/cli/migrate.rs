//! `tessera migrate`: apply, revert, list and create migrations.

use std::path::Path;

use super::{CommandError, MigrateAction};
use crate::core::db::{self, Migrator};

/// Runs one `migrate` action against the database at `url`.
pub(super) async fn migrate(url: &str, action: MigrateAction) -> Result<(), CommandError> {
    let mut migrator = Migrator::connect(url).await?;
    match action {
        MigrateAction::Up => report("applied", &migrator.run_pending()?),
        MigrateAction::Down { count } => report("reverted", &migrator.revert(count)?),
        MigrateAction::Reset => {
            let all = db::embedded_migrations()?.len();
            report("reverted", &migrator.revert(all)?);
            report("applied", &migrator.run_pending()?);
        }
        MigrateAction::Redo { count } => {
            report("reverted", &migrator.revert(count)?);
            report("applied", &migrator.run_pending()?);
        }
        MigrateAction::Status => {
            for migration in migrator.status()? {
                let mark = if migration.applied {
                    "applied"
                } else {
                    "pending"
                };
                println!("{mark:8} {}", migration.name);
            }
        }
        MigrateAction::New { name } => create_migration(Path::new("migrations"), &name)?,
    }
    Ok(())
}

fn report(verb: &str, names: &[String]) {
    if names.is_empty() {
        println!("nothing {verb}");
    }
    for name in names {
        println!("{verb} {name}");
    }
}

/// Creates `dir/<YYYY-MM-DD-HHMMSS>_<name>/{up,down}.sql`, the layout diesel expects.
pub(super) fn create_migration(dir: &Path, name: &str) -> Result<(), CommandError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(CommandError::Usage(format!(
            "migration name {name:?} must be snake_case (a-z, 0-9, _)"
        )));
    }
    if !dir.is_dir() {
        return Err(CommandError::Usage(format!(
            "no {} folder here: run this from the repository root",
            dir.display()
        )));
    }
    let stamp = chrono::Utc::now().format("%Y-%m-%d-%H%M%S");
    let folder = dir.join(format!("{stamp}_{name}"));
    std::fs::create_dir(&folder)?;
    std::fs::write(folder.join("up.sql"), format!("-- {name}: apply\n"))?;
    std::fs::write(
        folder.join("down.sql"),
        format!("-- {name}: undo exactly what up.sql does\n"),
    )?;
    println!("created {}", folder.display());
    Ok(())
}
