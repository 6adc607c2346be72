package jobs

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlite"
)

// FuzzAgentHandler feeds arbitrary JSON bodies to the agent's endpoints,
// as a job's token holder (the imaging environment, or whoever stole the
// token) may send them: never a panic nor a 5xx, and the job stays
// consistent.
func FuzzAgentHandler(f *testing.F) {
	f.Add(uint8(0), []byte(`{"phase":"restore","bytes_done":10,"bytes_total":100,"rate":5,"message":"p"}`))
	f.Add(uint8(1), []byte(`{"lines":["a","b"]}`))
	f.Add(uint8(2), []byte(`{"ok":true,"image":"x"}`))
	f.Add(uint8(2), []byte(`{"ok":false,"error":"disk gone"}`))
	f.Add(uint8(3), []byte(`{"hardware":{"memory_bytes":1073741824},"disks":[{"size":1e12}]}`))
	f.Add(uint8(0), []byte(`{"bytes_done":-1,"bytes_total":-9223372036854775808}`))
	f.Add(uint8(1), []byte(`{"lines":null}`))
	f.Add(uint8(3), []byte(`[`))
	st, err := sqlite.Open(context.Background(), filepath.Join(f.TempDir(), "j.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	s := &Service{Store: st}
	h := s.AgentHandler()
	paths := []string{"/api/v1/agent/job/progress", "/api/v1/agent/job/log", "/api/v1/agent/job/result", "/api/v1/agent/info"}
	n := 0
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		ctx := context.Background()
		n++
		tok := fmt.Sprintf("pbj_fuzz%d", n)
		j, err := st.CreateJob(ctx, store.Job{MAC: "52:54:00:00:00:42", Kind: store.KindImageCapture, Image: "x", State: store.JobRunning,
			TokenHash: HashToken(tok), ClientIP: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, paths[int(route)%len(paths)], bytes.NewReader(body))
		req.RemoteAddr = "127.0.0.1:1000"
		req.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s: %d %s", req.URL.Path, w.Code, w.Body.String())
		}
		got, err := st.Job(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.BytesDone < 0 || got.BytesTotal < 0 || got.Rate < 0 {
			t.Fatalf("job took negative figures: %+v", got)
		}
	})
}
