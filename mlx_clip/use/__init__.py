"""What people do with a model on their whole collection: index every record (llm's SQLite
schema), search it in a local page, and the curator's files (duplicates, suspects, suggestions)."""
