#!/usr/bin/env python3
"""WAL pages one coalesced commit of device reports writes, with the report's UPDATE as it was
(every indexed column assigned) and as it is (indexed columns assigned only when they change);
see docs/PERFORMANCE.md. Usage: scripts/report_update_pages.py [DEVICES] [REPORTS].

The table is the embedded store's `devices` reduced to the columns a report writes, with the same
indexes over them (`store/src/embedded/schema.rs`), so it runs with Python's sqlite3 alone.
Each report repeats the device's placement (firmware, addresses, site) and moves its
`last_report_at`, as a fleet's reports do.
"""
import os
import random
import shutil
import sqlite3
import sys
import tempfile

DEVICES = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
REPORTS = int(sys.argv[2]) if len(sys.argv) > 2 else 1_700
BEFORE = ("UPDATE devices SET firmware = CASE WHEN ?2 = '' THEN firmware ELSE ?2 END, public_ip = ?3, "
          "private_ip = ?4, site_id = ?5, sip_status = ?7, call_status = ?8, last_report_at = ?6, uptime_s = ?9, "
          "sip_lines = ?10 WHERE id = ?1 AND last_report_at <= ?6")
PLACEMENT = ("UPDATE devices SET firmware = CASE WHEN ?2 = '' THEN firmware ELSE ?2 END, public_ip = ?3, "
             "private_ip = ?4, site_id = ?5 WHERE id = ?1 AND last_report_at <= ?6 AND (public_ip IS NOT ?3 "
             "OR private_ip IS NOT ?4 OR site_id IS NOT ?5 OR (?2 <> '' AND firmware IS NOT ?2))")
REPORT = ("UPDATE devices SET sip_status = ?2, call_status = ?3, last_report_at = ?4, uptime_s = ?5, "
          "sip_lines = ?6 WHERE id = ?1 AND last_report_at <= ?4")


def placement(i):
    return ("1.2.3", f"203.0.{i % 250}.{i % 199}", f"10.{i % 250}.{i % 97}.1", i % 50)


def main():
    work = tempfile.mkdtemp()
    base = os.path.join(work, "base.db")
    c = sqlite3.connect(base, isolation_level=None)
    c.execute("PRAGMA journal_mode = wal")
    c.execute("CREATE TABLE devices (id INTEGER PRIMARY KEY, enterprise_id INTEGER, firmware TEXT, public_ip TEXT, "
              "private_ip TEXT, site_id INTEGER, online INTEGER, sip_status TEXT, call_status TEXT, "
              "last_report_at INTEGER, uptime_s INTEGER, sip_lines TEXT)")
    for columns in ["firmware, id", "public_ip, id", "private_ip, id", "last_report_at, id",
                    "enterprise_id, site_id, online", "site_id, id"]:
        c.execute(f"CREATE INDEX devices_{columns.replace(', ', '_')} ON devices({columns})")
    c.execute("BEGIN")
    c.executemany("INSERT INTO devices VALUES (?, 1, ?, ?, ?, ?, 1, 'registered', 'idle', 1000, 5, '[]')",
                  ((i, *placement(i)) for i in range(1, DEVICES + 1)))
    c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    batch = random.Random(1).sample(range(1, DEVICES + 1), REPORTS)
    for name in ["before", "after"]:
        db = os.path.join(work, f"{name}.db")
        shutil.copy(base, db)
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("PRAGMA wal_autocheckpoint = 0")
        c.execute("BEGIN")
        for i in batch:
            firmware, public, private, site = placement(i)
            if name == "before":
                c.execute(BEFORE, (i, firmware, public, private, site, 2000, "registered", "idle", 6, "[]"))
            else:
                c.execute(PLACEMENT, (i, firmware, public, private, site, 2000))
                c.execute(REPORT, (i, "registered", "idle", 2000, 6, "[]"))
        c.execute("COMMIT")
        pages = os.path.getsize(db + "-wal") // (4096 + 24)
        print(f"{name}: {pages} WAL pages for {REPORTS} reports of {DEVICES} devices")
        c.close()
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
