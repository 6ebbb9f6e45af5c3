"""The database's schema, as the steps that build it: a new database runs them all, an older one the ones it
lacks (its `PRAGMA user_version` counts the steps it has had).
"""

from __future__ import annotations

import sqlite3

# Each step moves the schema from version i to i+1. Never edit a released step; add a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        title TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        enable_thinking INTEGER NOT NULL DEFAULT 1,
        system_prompt TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL DEFAULT '',
        thinking TEXT NOT NULL DEFAULT '',
        thinking_closed INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'complete',
        error TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        mode TEXT NOT NULL DEFAULT '',
        sampling TEXT NOT NULL DEFAULT '{}',
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        prompt_seconds REAL NOT NULL DEFAULT 0,
        generation_seconds REAL NOT NULL DEFAULT 0,
        tokens_per_second REAL NOT NULL DEFAULT 0,
        pid INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE INDEX conversations_by_update ON conversations(updated_at);
    """,
    # 2: full-text search over answers, questions and thinking (FTS5, kept in step by triggers)
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5(content, thinking, content='messages', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2');
    INSERT INTO messages_fts(rowid, content, thinking) SELECT id, content, thinking FROM messages;
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content, thinking) VALUES (new.id, new.content, new.thinking);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, thinking)
            VALUES ('delete', old.id, old.content, old.thinking);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, thinking ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, thinking)
            VALUES ('delete', old.id, old.content, old.thinking);
        INSERT INTO messages_fts(rowid, content, thinking) VALUES (new.id, new.content, new.thinking);
    END;
    """,
    # 3: message versions (edit and resend, regenerate), thinking budget and context fields, personas.
    # ADD COLUMN rewrites nothing, so this is instant even on a large history; old rows come out active.
    """
    ALTER TABLE messages ADD COLUMN superseded_by INTEGER;
    ALTER TABLE messages ADD COLUMN thinking_budget INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN thinking_cut_at INTEGER;
    ALTER TABLE messages ADD COLUMN context_from_id INTEGER;
    CREATE INDEX messages_by_superseded ON messages(superseded_by) WHERE superseded_by IS NOT NULL;
    CREATE TABLE personas (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        prompt TEXT NOT NULL,
        created_at REAL,
        updated_at REAL
    );
    """,
    # 4: a conversation's own thinking budget (/budget N); NULL: the preset's default
    """
    ALTER TABLE conversations ADD COLUMN thinking_budget INTEGER;
    """,
    # 5: files attached to a user message (/file): their text as it was when sent, never read from disk again;
    # searchable like the messages
    """
    CREATE TABLE attachments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        content TEXT NOT NULL,
        tokens INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX attachments_by_message ON attachments(message_id, position);
    CREATE VIRTUAL TABLE attachments_fts USING fts5(name, content, content='attachments', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2');
    CREATE TRIGGER attachments_fts_insert AFTER INSERT ON attachments BEGIN
        INSERT INTO attachments_fts(rowid, name, content) VALUES (new.id, new.name, new.content);
    END;
    CREATE TRIGGER attachments_fts_delete AFTER DELETE ON attachments BEGIN
        INSERT INTO attachments_fts(attachments_fts, rowid, name, content)
            VALUES ('delete', old.id, old.name, old.content);
    END;
    """,
    # 6: the servers and tools a conversation has turned off ("server" or "server/tool"), and the tool calls an
    # answer ends with, each with its approval state and result (the next answer of the loop
    # is the next assistant message); `pid` marks a call still being decided or run, as for streaming answers
    """
    CREATE TABLE tool_calls (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        call_id TEXT NOT NULL,
        name TEXT NOT NULL,
        server TEXT NOT NULL DEFAULT '',
        arguments TEXT NOT NULL DEFAULT '{}',
        raw TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'pending',
        result TEXT NOT NULL DEFAULT '',
        truncated INTEGER NOT NULL DEFAULT 0,
        pid INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX tool_calls_by_message ON tool_calls(message_id, position);
    CREATE VIRTUAL TABLE tool_calls_fts USING fts5(name, arguments, result, content='tool_calls', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2');
    CREATE TRIGGER tool_calls_fts_insert AFTER INSERT ON tool_calls BEGIN
        INSERT INTO tool_calls_fts(rowid, name, arguments, result) VALUES (new.id, new.name, new.arguments, new.result);
    END;
    CREATE TRIGGER tool_calls_fts_delete AFTER DELETE ON tool_calls BEGIN
        INSERT INTO tool_calls_fts(tool_calls_fts, rowid, name, arguments, result)
            VALUES ('delete', old.id, old.name, old.arguments, old.result);
    END;
    ALTER TABLE conversations ADD COLUMN tools_off TEXT NOT NULL DEFAULT '[]';
    CREATE TRIGGER tool_calls_fts_update AFTER UPDATE OF result ON tool_calls BEGIN
        INSERT INTO tool_calls_fts(tool_calls_fts, rowid, name, arguments, result)
            VALUES ('delete', old.id, old.name, old.arguments, old.result);
        INSERT INTO tool_calls_fts(rowid, name, arguments, result) VALUES (new.id, new.name, new.arguments, new.result);
    END;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit on its own); triggers keep their body."""
    found, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            found.append(current.strip())
            current = ""
    return [s for s in found if s.strip(" ;\n")]
