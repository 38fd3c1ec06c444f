package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/julienschmidt/httprouter"
)

// libraryType is the Content-Type of the browser library (module scripts are UTF-8 whatever
// the header says).
const libraryType = "application/javascript"

// library is the browser library, web/client/tidings.js, as every node serves it to apps: at a
// stable path that is revalidated, and under its content hash, immutable (docs/clients.md).
type library struct {
	body   []byte
	hash   string // the first 12 hex digits of the SHA-256 of body
	etag   string
	hashed string // "tidings.<hash>.js"
}

func newLibrary() *library {
	b, err := static.ReadFile("client/tidings.js")
	if err != nil {
		panic("web: read the embedded library: " + err.Error()) // it is built in
	}
	sum := sha256.Sum256(b)
	hash := hex.EncodeToString(sum[:])[:12]
	return &library{body: b, hash: hash, etag: `"` + hash + `"`, hashed: "tidings." + hash + ".js"}
}

// serve answers GET /client/tidings.js (no-cache: revalidated with its ETag, so an app gets a
// new version at its next load) and GET /client/tidings.<hash>.js for the current hash
// (immutable). Any other name, an older hash included, is 404: a hashed name never changes
// its content.
func (l *library) serve(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	h := w.Header()
	switch ps.ByName("file") {
	case "tidings.js":
		h.Set("Cache-Control", "no-cache")
	case l.hashed:
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	default:
		writeError(w, errNotFound)
		return
	}
	h.Set("Content-Type", libraryType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", l.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(l.body))
}
