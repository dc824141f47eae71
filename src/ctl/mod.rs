//! `fleetpulse ctl`: a command-line client of the management API for people and scripts.
//! `login` keeps a session in a 0600 file (`session_file`); every other command uses it.
//! Failures say plainly what happened and exit with a documented code (`http::Exit`):
//! 0 ok, 1 other, 2 usage, 3 auth, 4 not found, 5 conflict or limit, 6 server unavailable.

mod http;
mod output;
mod session_file;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use http::{ApiClient, Body, CtlError, Exit};

/// `fleetpulse ctl ...`
#[derive(Debug, Args)]
pub struct CtlArgs {
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Logs in and keeps the session (password from FLEETPULSE_PASSWORD or a prompt).
    Login {
        /// The management API, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        #[arg(long)]
        email: String,
    },
    /// Devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Alarm records.
    #[command(subcommand)]
    Alarms(AlarmsCommand),
    /// Alarm strategies.
    #[command(subcommand)]
    Strategies(StrategiesCommand),
    /// The operation log.
    #[command(subcommand)]
    Oplog(OplogCommand),
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// Lists every matching device, page by page (progress on stderr).
    List(ListArgs),
    /// Queues a command for a device (a kind of GET /api/v1/command-kinds).
    Command {
        id: u64,
        kind: String,
        /// Its arguments, a JSON object.
        #[arg(long)]
        args: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AlarmsCommand {
    /// Lists alarm records, page by page.
    List(ListArgs),
    /// Acknowledges an active alarm.
    Ack { id: u64 },
    /// Clears an alarm by hand.
    Clear { id: u64 },
}

#[derive(Debug, Subcommand)]
enum StrategiesCommand {
    /// Creates or replaces (by name, within its enterprise) the strategy of a TOML file.
    Apply {
        /// The strategy: `enterprise_id`, `name` and the fields of POST /api/v1/enterprises/{id}/alarm-strategies.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum OplogCommand {
    /// Writes the operation log as CSV to stdout.
    Export {
        /// Filters of GET /api/v1/operation-logs/export (from, to, operation, account_id, enterprise_id).
        #[arg(long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct ListArgs {
    /// A filter of the list's query (repeatable), e.g. `online=true`, `enterprise_id=3`.
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Rows per request.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    page_size: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Json,
    Table,
}

/// Runs a ctl command and returns the process exit code, having said what failed on stderr.
pub fn run(args: CtlArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleetpulse ctl: cannot start: {e}");
            return Exit::Other as i32;
        }
    };
    match runtime.block_on(dispatch(args.command)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("fleetpulse ctl: {e}");
            e.exit as i32
        }
    }
}

async fn dispatch(command: CtlCommand) -> Result<(), CtlError> {
    if let CtlCommand::Login { url, email } = command {
        return login(&url, &email).await;
    }
    let saved = session_file::load()?;
    let api = ApiClient::new(&saved.url, Some(saved.token))?;
    let whose = format!(" [session of {} at {}]", saved.email, saved.url);
    run_command(&api, command).await.map_err(|mut e| {
        if e.exit == Exit::Auth {
            e.message.push_str(&whose);
        }
        e
    })
}

async fn run_command(api: &ApiClient, command: CtlCommand) -> Result<(), CtlError> {
    match command {
        CtlCommand::Login { url, email } => login(&url, &email).await,
        CtlCommand::Devices(DevicesCommand::List(list)) => {
            let rows = list_all(api, "/api/v1/devices", &list, Paging::Cursor, "devices").await?;
            print_rows(&rows, list.output, &["id", "mac", "name", "model", "firmware", "enterprise_name", "online"])
        }
        CtlCommand::Devices(DevicesCommand::Command { id, kind, args }) => {
            let args: Value = match args {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| CtlError::new(Exit::Usage, format!("--args must be a JSON object: {e}")))?,
                None => Value::Null,
            };
            let body = json!({"kind": kind, "args": args});
            let command = api.json(Method::POST, &format!("/api/v1/devices/{id}/commands"), &[], Some(&body)).await?;
            println!("{}", pretty(&command));
            Ok(())
        }
        CtlCommand::Alarms(AlarmsCommand::List(list)) => {
            let rows = list_all(api, "/api/v1/alarms", &list, Paging::After, "alarms").await?;
            print_rows(
                &rows,
                list.output,
                &["id", "device_id", "code", "name", "severity", "status", "count", "latest_at"],
            )
        }
        CtlCommand::Alarms(AlarmsCommand::Ack { id }) => {
            let alarm = api.json(Method::POST, &format!("/api/v1/alarms/{id}/acknowledge"), &[], None).await?;
            println!("alarm {id}: {}", alarm["status"].as_str().unwrap_or("?"));
            Ok(())
        }
        CtlCommand::Alarms(AlarmsCommand::Clear { id }) => {
            let alarm = api.json(Method::POST, &format!("/api/v1/alarms/{id}/clear"), &[], None).await?;
            println!("alarm {id}: {}", alarm["status"].as_str().unwrap_or("?"));
            Ok(())
        }
        CtlCommand::Strategies(StrategiesCommand::Apply { file }) => apply_strategy(api, &file).await,
        CtlCommand::Oplog(OplogCommand::Export { filters }) => {
            let query = parse_filters(&filters)?;
            match api.call(Method::GET, "/api/v1/operation-logs/export", &query, None).await? {
                Body::Text(csv) => print!("{csv}"),
                Body::Json(v) => println!("{v}"),
            }
            Ok(())
        }
    }
}

async fn login(url: &str, email: &str) -> Result<(), CtlError> {
    let password = match std::env::var("FLEETPULSE_PASSWORD") {
        Ok(p) => p,
        Err(_) => prompt_password()?,
    };
    let api = ApiClient::new(url, None)?;
    let session =
        api.json(Method::POST, "/api/v1/auth/login", &[], Some(&json!({"email": email, "password": password}))).await?;
    let token = session["token"]
        .as_str()
        .ok_or_else(|| CtlError::new(Exit::Other, "the login answer has no token"))?
        .to_owned();
    let path = session_file::save(&session_file::Saved { url: api.base.clone(), email: email.to_owned(), token })?;
    if session["must_change_password"] == true {
        eprintln!("note: this account must change its password (in the console) before anything else works");
    }
    eprintln!("logged in to {} as {email}; session kept in {}", api.base, path.display());
    Ok(())
}

/// Reads a password from the terminal (echo off) or from stdin.
fn prompt_password() -> Result<String, CtlError> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
        let _ = std::process::Command::new("stty").arg("-echo").status();
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if terminal {
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
    }
    read.map_err(|e| CtlError::new(Exit::Other, format!("cannot read the password: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(CtlError::new(Exit::Usage, "no password given (set FLEETPULSE_PASSWORD or type it)"));
    }
    Ok(password)
}

fn parse_filters(filters: &[String]) -> Result<Vec<(String, String)>, CtlError> {
    filters
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| CtlError::new(Exit::Usage, format!("--filter {f:?} must be KEY=VALUE")))
        })
        .collect()
}

/// How a list pages: the device list by `cursor`/`next_cursor`, the others by `after`/`next_after`.
#[derive(Clone, Copy)]
enum Paging {
    Cursor,
    After,
}

/// Every row of a listing, page by page, with progress on stderr once it takes several pages.
async fn list_all(
    api: &ApiClient,
    path: &str,
    list: &ListArgs,
    paging: Paging,
    what: &str,
) -> Result<Vec<Value>, CtlError> {
    let filters = parse_filters(&list.filters)?;
    let (param, next) = match paging {
        Paging::Cursor => ("cursor", "next_cursor"),
        Paging::After => ("after", "next_after"),
    };
    let mut rows = Vec::new();
    let mut position: Option<String> = None;
    let mut pages = 0u32;
    loop {
        let mut query = filters.clone();
        query.push(("limit".into(), list.page_size.to_string()));
        if let Some(p) = &position {
            query.push((param.into(), p.clone()));
        }
        let page = api.json(Method::GET, path, &query, None).await?;
        let items = page["items"]
            .as_array()
            .ok_or_else(|| CtlError::new(Exit::Other, format!("{path} answered a page without items")))?;
        rows.extend(items.iter().cloned());
        pages += 1;
        position = match &page[next] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if pages > 1 || position.is_some() {
            match page["total"].as_u64() {
                Some(total) => eprintln!("{what}: {} of {total}", rows.len()),
                None => eprintln!("{what}: {}", rows.len()),
            }
        }
        if position.is_none() {
            return Ok(rows);
        }
    }
}

fn print_rows(rows: &[Value], output: Output, columns: &[&str]) -> Result<(), CtlError> {
    match output {
        Output::Json => println!("{}", pretty(&Value::Array(rows.to_vec()))),
        Output::Table => print!("{}", output::table(rows, columns)),
    }
    Ok(())
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// `strategies apply -f file.toml`: replaces the enterprise's strategy of that name, or creates it.
async fn apply_strategy(api: &ApiClient, file: &std::path::Path) -> Result<(), CtlError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CtlError::new(Exit::Usage, format!("cannot read {}: {e}", file.display())))?;
    let mut body: Value = toml::from_str(&text)
        .map_err(|e| CtlError::new(Exit::Usage, format!("{} is not valid TOML: {e}", file.display())))?;
    let enterprise = body
        .as_object_mut()
        .and_then(|o| o.remove("enterprise_id"))
        .and_then(|v| v.as_u64())
        .ok_or_else(|| CtlError::new(Exit::Usage, format!("{} needs enterprise_id = <id>", file.display())))?;
    let name = body["name"]
        .as_str()
        .ok_or_else(|| CtlError::new(Exit::Usage, format!("{} needs name = \"...\"", file.display())))?
        .to_owned();
    let existing =
        api.json(Method::GET, &format!("/api/v1/enterprises/{enterprise}/alarm-strategies"), &[], None).await?;
    let same =
        existing["items"].as_array().and_then(|items| items.iter().find(|s| s["settings"]["name"] == name.as_str()));
    let (verb, stored) = match same.and_then(|s| s["id"].as_u64()) {
        Some(id) => {
            ("replaced", api.json(Method::PUT, &format!("/api/v1/alarm-strategies/{id}"), &[], Some(&body)).await?)
        }
        None => (
            "created",
            api.json(Method::POST, &format!("/api/v1/enterprises/{enterprise}/alarm-strategies"), &[], Some(&body))
                .await?,
        ),
    };
    println!("strategy {} {verb}: {name}", stored["id"]);
    Ok(())
}
