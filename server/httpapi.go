package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// API serves a running `shoal serve` over HTTP: GET /api/status (JSON),
// POST /api/start (send now), POST /api/drop?client=N, and GET /metrics
// (Prometheus). It follows the server of each round (SetServer), and its
// counters add up over rounds. The mux it returns is the one HTTP server of
// shoal serve: the PXE boot files are mounted on it too.
type API struct {
	mu       sync.Mutex
	current  *Server
	round    int
	totals   Counters // of finished rounds
	sessions int      // finished rounds
	results  map[string]int
	last     *StatusJSON // the last finished round
	reg      *prometheus.Registry
}

// NewAPI returns an API with no server yet.
func NewAPI() *API {
	a := &API{results: map[string]int{}, reg: prometheus.NewRegistry()}
	a.reg.MustRegister(apiCollector{a})
	return a
}

// SetServer makes s the round the API reports on; the previous round's
// final numbers are added to the totals.
func (a *API) SetServer(s *Server) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if prev := a.current; prev != nil {
		st := prev.Status()
		a.totals = addCounters(a.totals, st.Counters)
		a.sessions++
		for _, c := range st.Clients {
			if c.State != ClientLeft {
				a.results[resultOf(c)]++
			}
		}
		j := statusJSON(st, a.round)
		a.last = &j
	}
	a.current = s
	a.round++
}

func addCounters(a, b Counters) Counters {
	a.DataPackets += b.DataPackets
	a.RepairPackets += b.RepairPackets
	a.PayloadBytes += b.PayloadBytes
	a.WireBytes += b.WireBytes
	a.Beacons += b.Beacons
	a.NackRanges += b.NackRanges
	a.SendStalls += b.SendStalls
	return a
}

func resultOf(c ClientInfo) string {
	switch {
	case c.OK:
		return "ok"
	case c.State == ClientDropped:
		return "dropped"
	case c.State.Final():
		return "failed"
	}
	return "unfinished"
}

// Handler returns the API's routes on a new mux; callers may add theirs.
func (a *API) Handler() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", a.status)
	mux.HandleFunc("POST /api/start", a.start)
	mux.HandleFunc("POST /api/drop", a.drop)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	return mux
}

// StatusJSON is the body of GET /api/status.
type StatusJSON struct {
	Session        string       `json:"session"`
	Round          int          `json:"round"`
	State          State        `json:"state"`
	Mode           Mode         `json:"mode"`
	Group          string       `json:"group"`
	ImageBytes     int64        `json:"image_bytes"`
	WireBytes      int64        `json:"wire_bytes"`
	Started        *time.Time   `json:"started,omitempty"`
	ElapsedSeconds float64      `json:"elapsed_seconds"`
	RateBPS        int64        `json:"rate_bps"`
	PayloadSent    uint64       `json:"payload_bytes_sent"`
	WireSent       uint64       `json:"wire_bytes_sent"`
	DataPackets    uint64       `json:"data_packets"`
	RepairPackets  uint64       `json:"repair_packets"`
	NackRanges     uint64       `json:"nack_ranges"`
	StartCriteria  []string     `json:"start_criteria,omitempty"`
	Clients        []ClientJSON `json:"clients"`
	LastRound      *StatusJSON  `json:"last_round,omitempty"`
}

// ClientJSON is one client in the status.
type ClientJSON struct {
	ID           uint32     `json:"id"`
	MAC          string     `json:"mac"`
	IP           string     `json:"ip"`
	Hostname     string     `json:"hostname,omitempty"`
	Disk         string     `json:"disk"`
	State        string     `json:"state"`
	Result       string     `json:"result"`
	BytesWritten uint64     `json:"bytes_written"`
	Progress     float64    `json:"progress"`
	NackRanges   uint64     `json:"nack_ranges"`
	LastHeard    *time.Time `json:"last_heard,omitempty"`
	SHA256       string     `json:"sha256,omitempty"`
	Error        string     `json:"error,omitempty"`
}

func statusJSON(st Status, round int) StatusJSON {
	j := StatusJSON{
		Session: st.Session, Round: round, State: st.State, Mode: st.Mode, Group: st.Group.String(),
		ImageBytes: st.ImageBytes, WireBytes: st.WireBytes, RateBPS: st.Counters.Rate,
		PayloadSent: st.Counters.PayloadBytes, WireSent: st.Counters.WireBytes,
		DataPackets: st.Counters.DataPackets, RepairPackets: st.Counters.RepairPackets, NackRanges: st.Counters.NackRanges,
		Clients: []ClientJSON{},
	}
	if !st.Started.IsZero() {
		t := st.Started
		j.Started = &t
		end := time.Now()
		if !st.Finished.IsZero() {
			end = st.Finished
		}
		j.ElapsedSeconds = end.Sub(st.Started).Seconds()
	}
	for _, c := range st.Clients {
		cj := ClientJSON{
			ID: c.ID, MAC: c.MAC, IP: c.Addr.String(), Hostname: c.Hostname, Disk: c.Disk, State: string(c.State),
			Result: resultOf(c), BytesWritten: c.Progress.BytesWritten, NackRanges: c.NackRanges, Error: c.Error,
		}
		if st.ImageBytes > 0 {
			cj.Progress = float64(c.Progress.BytesWritten) / float64(st.ImageBytes)
		}
		if c.OK {
			cj.Progress = 1
		}
		if !c.LastHeard.IsZero() {
			t := c.LastHeard
			cj.LastHeard = &t
		}
		if c.Verified {
			cj.SHA256 = fmt.Sprintf("%x", c.SHA256)
		}
		j.Clients = append(j.Clients, cj)
	}
	return j
}

func (a *API) snapshot() (cur *Server, round int, totals Counters, sessions int, results map[string]int, last *StatusJSON) {
	a.mu.Lock()
	defer a.mu.Unlock()
	results = make(map[string]int, len(a.results))
	for k, v := range a.results {
		results[k] = v
	}
	return a.current, a.round, a.totals, a.sessions, results, a.last
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	cur, round, _, _, _, last := a.snapshot()
	if cur == nil {
		http.Error(w, "no session yet", http.StatusServiceUnavailable)
		return
	}
	j := statusJSON(cur.Status(), round)
	j.StartCriteria = cur.StartStatus()
	j.LastRound = last
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(j)
}

func (a *API) start(w http.ResponseWriter, r *http.Request) {
	cur, _, _, _, _, _ := a.snapshot()
	if cur == nil {
		http.Error(w, "no session yet", http.StatusServiceUnavailable)
		return
	}
	cur.StartNow()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintln(w, `{"start":"requested: the session starts as soon as a client has joined"}`)
}

func (a *API) drop(w http.ResponseWriter, r *http.Request) {
	cur, _, _, _, _, _ := a.snapshot()
	id, err := strconv.ParseUint(r.URL.Query().Get("client"), 10, 32)
	if err != nil {
		http.Error(w, "want ?client=N", http.StatusBadRequest)
		return
	}
	if cur == nil {
		http.Error(w, "no session yet", http.StatusServiceUnavailable)
		return
	}
	if err := cur.DropClient(uint32(id)); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// apiCollector turns the API's snapshot into Prometheus metrics at scrape
// time.
type apiCollector struct{ a *API }

var (
	descBytes    = prometheus.NewDesc("shoal_payload_bytes_sent_total", "Chunk bytes sent, repairs included, over all sessions.", nil, nil)
	descWire     = prometheus.NewDesc("shoal_wire_bytes_sent_total", "Datagram bytes sent (UDP payload and IP/UDP headers), over all sessions.", nil, nil)
	descPackets  = prometheus.NewDesc("shoal_packets_sent_total", "Packets sent, by kind, over all sessions.", []string{"kind"}, nil)
	descNacks    = prometheus.NewDesc("shoal_nack_ranges_received_total", "Ranges of missing fragments clients asked for, over all sessions.", nil, nil)
	descStalls   = prometheus.NewDesc("shoal_send_stalls_total", "Times the interface queue was full, over all sessions.", nil, nil)
	descSessions = prometheus.NewDesc("shoal_sessions_finished_total", "Sessions (rounds) finished.", nil, nil)
	descResults  = prometheus.NewDesc("shoal_client_results_total", "Client results of finished sessions.", []string{"result"}, nil)
	descClients  = prometheus.NewDesc("shoal_clients", "Clients of the current session, by state.", []string{"state"}, nil)
	descDuration = prometheus.NewDesc("shoal_session_duration_seconds", "Time since the current session started sending (0 while waiting).", nil, nil)
	descRate     = prometheus.NewDesc("shoal_send_rate_bits_per_second", "The sender's current rate.", nil, nil)
	descProgress = prometheus.NewDesc("shoal_client_progress_ratio", "Share of the image each client has written.", []string{"client", "mac", "ip"}, nil)
)

func (c apiCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBytes, descWire, descPackets, descNacks, descStalls, descSessions, descResults, descClients, descDuration, descRate, descProgress} {
		ch <- d
	}
}

func (c apiCollector) Collect(ch chan<- prometheus.Metric) {
	cur, _, totals, sessions, results, _ := c.a.snapshot()
	var st Status
	if cur != nil {
		st = cur.Status()
	}
	k := addCounters(totals, st.Counters)
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descBytes, float64(k.PayloadBytes))
	counter(descWire, float64(k.WireBytes))
	counter(descPackets, float64(k.DataPackets), "data")
	counter(descPackets, float64(k.RepairPackets), "repair")
	counter(descPackets, float64(k.Beacons), "beacon")
	counter(descNacks, float64(k.NackRanges))
	counter(descStalls, float64(k.SendStalls))
	counter(descSessions, float64(sessions))
	for _, r := range []string{"ok", "failed", "dropped"} {
		counter(descResults, float64(results[r]), r)
	}
	states := map[ClientState]int{}
	for _, cl := range st.Clients {
		states[cl.State]++
	}
	for _, s := range []ClientState{ClientJoined, ClientReceiving, ClientVerifying, ClientDone, ClientFailed, ClientDropped, ClientLeft} {
		gauge(descClients, float64(states[s]), string(s))
	}
	dur := 0.0
	if !st.Started.IsZero() {
		end := time.Now()
		if !st.Finished.IsZero() {
			end = st.Finished
		}
		dur = end.Sub(st.Started).Seconds()
	}
	gauge(descDuration, dur)
	gauge(descRate, float64(st.Counters.Rate))
	for _, cl := range st.Clients {
		p := 0.0
		if st.ImageBytes > 0 {
			p = float64(cl.Progress.BytesWritten) / float64(st.ImageBytes)
		}
		if cl.OK {
			p = 1
		}
		gauge(descProgress, p, strconv.FormatUint(uint64(cl.ID), 10), cl.MAC, cl.Addr.String())
	}
}
