package data

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// fault is what a failed append tells about the events it carried.
type fault int

const (
	// faultFailed: nothing was stored, and the events are not to blame (the database refused
	// the transaction, or was not reached). A retry may succeed.
	faultFailed fault = iota
	// faultInput: PostgreSQL refused a value (SQLSTATE class 22 or 23): one call's events.
	faultInput
	// faultSize: the batch is more than PostgreSQL takes in one statement (class 54, program
	// limit exceeded, such as a jsonb or array over its size limit, or 53200, out of memory).
	faultSize
	// faultUnknown: the statement was sent and no answer says how it ended (the connection was
	// lost or closed, the server ended the session, the commit timed out): it may have
	// committed.
	faultUnknown
)

// errNotSent marks an error that happened before any statement was sent.
type errNotSent struct{ err error }

func (e errNotSent) Error() string { return e.err.Error() }
func (e errNotSent) Unwrap() error { return e.err }

// classify tells from an append's error whether the append may have committed, and whether the
// events it carried are to blame. Only an ERROR answer from the server rolls the transaction
// back for certain: a FATAL one (pg_terminate_backend, a shutdown) can come after a local
// commit (while waiting for a synchronous standby), and a lost connection says nothing.
func classify(err error) fault {
	var notSent errNotSent
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &notSent), pgconn.SafeToRetry(err):
		return faultFailed
	case errors.As(err, &pgErr):
		severity := pgErr.SeverityUnlocalized
		if severity == "" {
			severity = pgErr.Severity
		}
		if severity != "ERROR" {
			return faultUnknown
		}
		switch {
		case len(pgErr.Code) != 5:
			return faultFailed
		case pgErr.Code[:2] == "22" || pgErr.Code[:2] == "23":
			return faultInput
		case pgErr.Code[:2] == "54" || pgErr.Code == "53200":
			return faultSize
		}
		return faultFailed
	}
	return faultUnknown
}
