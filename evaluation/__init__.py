"""Measuring a student: graders, closed-book answering, the general-ability canary and drift, the
forgetting ledger's metrics and eval reports."""
