// Command loadgen is Baton's HTTP/1.1 load generator: it replays a pool of
// pre-built, pre-signed requests against the gateway over HTTPS with a client
// certificate (mutual TLS), plain TLS or plain HTTP, and prints throughput and
// latency as one JSON object on stdout.
//
// Why a Go program built from Debian's golang-go, and not wrk:
//   - wrk has no client-certificate option. Patching its ssl.c needs its
//     source package (no deb-src here) and a C build, and a patched fork is
//     more to maintain than these ~900 lines of stdlib Go.
//   - wrk sends requests built by a Lua script. Taking each request of a
//     signed pool at most once (each carries a unique nonce, so a replay is
//     refused) needs shared state between its threads, which wrk's per-thread
//     Lua states don't offer. Here one atomic counter hands out the pool.
//   - Go's standard library covers everything: crypto/tls (TLS 1.3, client
//     certificates, session resumption), goroutines for N keep-alive
//     connections, net/http's response parser. It needs no module from the
//     network, and Debian's golang-go builds it on any machine of the
//     project (bench/loadgen/build.sh).
//   - It doesn't use net/http's Client. Each request is serialised to wire
//     bytes once at load time, exactly as given in the pool (header order and
//     case, Host, no added User-Agent or Accept-Encoding), and each worker owns
//     one connection: a closed loop at -c N is N keep-alive connections with
//     one request in flight on each. Sending costs one Write; reading uses
//     http.ReadResponse. This keeps the generator's CPU small next to the
//     gateway's on a 2-core machine.
//
// Pool file: JSON Lines, one request a line:
//
//	{"method":"POST","path":"/u/echo/rpc","headers":[["content-type","application/json"],["signature","..."]],"body_b64":"..."}
//
// Headers go on the wire in the order given. A Host header in the pool wins.
// Without one, Host comes from -host or the -url authority. Content-Length is
// added when a body is present (or the method is POST/PUT/PATCH). A
// Content-Length in the pool must match the body. Transfer-Encoding is refused.
//
// Modes:
//   - closed loop (-rate 0): -c workers, each with its own keep-alive
//     connection, send back to back until the pool is used up, -n requests
//     have been sent or -duration is over.
//   - open loop (-rate R): a pacer sends request i at t0 + i/R to whichever
//     of the -c connections is free. Latency is measured from that intended
//     start, so time spent waiting for a free connection counts
//     (coordinated-omission correction). "service_*" is measured from the
//     actual write, and "start_lag_*" from the intended start to the actual
//     write.
//
// Build: bench/loadgen/build.sh (binary: bench/.build/loadgen). Example:
//
//	bench/.build/loadgen -url https://127.0.0.1:8443 -cacert ca.pem -cert client.pem -key client.key \
//	    -requests pool.jsonl -c 32 -warmup 1000
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// poolLine is one line of the pool file.
type poolLine struct {
	Method  string     `json:"method"`
	Path    string     `json:"path"`
	Headers [][]string `json:"headers"`
	BodyB64 string     `json:"body_b64"`
}

// request is one pool entry, ready to send.
type request struct {
	wire []byte
	// meta carries the method, so that ReadResponse knows a HEAD response has no body.
	meta *http.Request
}

type config struct {
	url        *url.URL
	addr       string // host:port to dial
	useTLS     bool
	tlsConf    *tls.Config
	timeout    time.Duration
	conc       int
	rate       float64
	duration   time.Duration
	warmup     int64
	maxReqs    int64 // how many pool indices may be handed out (warmup included)
	loop       bool
	pool       []request
	errorLimit int
}

// Times are nanoseconds since base (monotonic).
var base = time.Now()

func now() int64 { return int64(time.Since(base)) }

const unset = math.MinInt64

// run holds the state shared by all workers.
type run struct {
	cfg       *config
	next      atomic.Int64 // next pool index to hand out (closed loop)
	stop      atomic.Bool
	tStart    atomic.Int64 // start of the measured window (first measured index claimed or due)
	stoppedBy atomic.Value // string
	whyOnce   sync.Once
	ticks     chan tick // open loop only
}

type tick struct {
	idx int64
	due int64
}

type tlsInfo struct {
	Version string `json:"version"`
	Cipher  string `json:"cipher"`
	ALPN    string `json:"alpn,omitempty"`
}

// worker owns one connection and its own statistics; they are merged at the end.
type worker struct {
	r        *run
	conn     net.Conn
	br       *bufio.Reader
	lat      []int64 // measured requests: end - intended start (open) or end - take (closed; includes a reconnect)
	svc      []int64 // measured requests: end - write start
	lag      []int64 // open loop, measured requests: write start - intended start
	status   map[int]int64
	errs     int64
	errKinds map[string]int64
	inWindow int64 // responses (warmup ones included) completed at or after tStart
	lastEnd  int64
	dials    int64
	resumed  int64
	onConn   int64 // requests sent on the current connection
	tls      *tlsInfo
}

func main() {
	var (
		urlStr     = flag.String("url", "", "base URL: https://HOST:PORT or http://HOST:PORT, an optional path prefix is put before each request's path")
		certFile   = flag.String("cert", "", "client certificate PEM (chain allowed) for mutual TLS")
		keyFile    = flag.String("key", "", "client private key PEM for -cert")
		caFile     = flag.String("cacert", "", "CA bundle PEM the server certificate is verified against (default: system roots)")
		insecure   = flag.Bool("insecure", false, "don't verify the server certificate (baselines only)")
		serverName = flag.String("servername", "", "TLS SNI and name to verify (default: the -url host)")
		hostHdr    = flag.String("host", "", "Host header for requests whose pool entry has none (default: the -url authority)")
		tlsMin     = flag.String("tls-min", "1.2", "lowest TLS version offered: 1.2 or 1.3")
		tlsMax     = flag.String("tls-max", "1.3", "highest TLS version offered: 1.2 or 1.3")
		noResume   = flag.Bool("no-resume", false, "disable TLS session resumption on reconnects")
		reqFile    = flag.String("requests", "", "request pool, JSON Lines (see the source's doc comment)")
		conc       = flag.Int("c", 32, "connections (closed loop: requests in flight; open loop: most requests in flight)")
		duration   = flag.Duration("duration", 0, "measured duration after warmup, e.g. 30s (0: until the pool or -n is used up)")
		rate       = flag.Float64("rate", 0, "open loop: requests per second (0: closed loop)")
		warmup     = flag.Int64("warmup", 0, "first N requests are sent but left out of the statistics")
		maxN       = flag.Int64("n", 0, "send at most N requests, warmup included (0: the whole pool)")
		offset     = flag.Int("offset", 0, "skip the pool's first N entries (e.g. a previous run's \"used\" plus its -offset)")
		loop       = flag.Bool("loop", false, "reuse the pool cyclically (only for targets without replay protection); needs -duration or -n")
		timeout    = flag.Duration("timeout", 10*time.Second, "dial, handshake and per-request timeout")
		procs      = flag.Int("procs", 0, "GOMAXPROCS for the generator (0: Go's default, one per CPU)")
		errLimit   = flag.Int("max-errors", 0, "stop after this many transport errors (0: never)")
	)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: loadgen -url URL -requests POOL.jsonl [flags]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 {
		die("unexpected arguments: %v", flag.Args())
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	if *urlStr == "" || *reqFile == "" {
		flag.Usage()
		os.Exit(2)
	}
	u, err := url.Parse(*urlStr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		die("-url must be http://HOST[:PORT] or https://HOST[:PORT]: %q", *urlStr)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		die("-url must not have a query or fragment")
	}
	cfg := &config{url: u, useTLS: u.Scheme == "https", timeout: *timeout, conc: *conc,
		rate: *rate, duration: *duration, warmup: *warmup, loop: *loop, errorLimit: *errLimit}
	port := u.Port()
	if port == "" {
		port = map[bool]string{true: "443", false: "80"}[cfg.useTLS]
	}
	cfg.addr = net.JoinHostPort(u.Hostname(), port)
	if cfg.conc < 1 {
		die("-c must be at least 1")
	}
	if cfg.rate < 0 || math.IsNaN(cfg.rate) || math.IsInf(cfg.rate, 0) {
		die("-rate must be a finite number >= 0")
	}
	if cfg.warmup < 0 || *maxN < 0 {
		die("-warmup and -n must be >= 0")
	}
	if cfg.useTLS {
		cfg.tlsConf = buildTLS(u, *certFile, *keyFile, *caFile, *serverName, *insecure, *tlsMin, *tlsMax, *noResume)
	} else if *certFile != "" || *caFile != "" || *insecure || *serverName != "" {
		die("-cert, -cacert, -insecure and -servername need an https:// -url")
	}
	if (*certFile == "") != (*keyFile == "") {
		die("-cert and -key go together")
	}

	defHost := u.Host
	if *hostHdr != "" {
		defHost = *hostHdr
	}
	pool, err := loadPool(*reqFile, strings.TrimRight(u.EscapedPath(), "/"), defHost)
	if err != nil {
		die("%v", err)
	}
	if len(pool) == 0 {
		die("%s: no requests", *reqFile)
	}
	if *offset < 0 || *offset >= len(pool) {
		die("-offset %d: the pool has %d requests", *offset, len(pool))
	}
	pool = pool[*offset:]
	cfg.pool = pool
	switch {
	case cfg.loop:
		if *maxN == 0 && cfg.duration == 0 {
			die("-loop needs -duration or -n")
		}
		cfg.maxReqs = math.MaxInt64
		if *maxN > 0 {
			cfg.maxReqs = *maxN
		}
	default:
		cfg.maxReqs = int64(len(pool))
		if *maxN > 0 && *maxN < cfg.maxReqs {
			cfg.maxReqs = *maxN
		}
	}
	if cfg.warmup >= cfg.maxReqs {
		die("-warmup %d leaves no request to measure (pool/-n allows %d)", cfg.warmup, cfg.maxReqs)
	}

	out := execute(cfg)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		die("writing output: %v", err)
	}
}

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", a...)
	os.Exit(1)
}

func buildTLS(u *url.URL, certFile, keyFile, caFile, serverName string, insecure bool, tlsMin, tlsMax string, noResume bool) *tls.Config {
	version := func(s string) uint16 {
		switch s {
		case "1.2":
			return tls.VersionTLS12
		case "1.3":
			return tls.VersionTLS13
		}
		die("TLS version must be 1.2 or 1.3, not %q", s)
		return 0
	}
	c := &tls.Config{
		MinVersion: version(tlsMin),
		MaxVersion: version(tlsMax),
		NextProtos: []string{"http/1.1"},
		ServerName: u.Hostname(),
	}
	if c.MinVersion > c.MaxVersion {
		die("-tls-min is above -tls-max")
	}
	if serverName != "" {
		c.ServerName = serverName
	}
	if !noResume {
		c.ClientSessionCache = tls.NewLRUClientSessionCache(4096)
	}
	if insecure {
		c.InsecureSkipVerify = true
	} else if caFile != "" {
		pemData, err := os.ReadFile(caFile)
		if err != nil {
			die("-cacert: %v", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemData) {
			die("-cacert %s: no PEM certificate found", caFile)
		}
		c.RootCAs = roots
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			die("-cert/-key: %v", err)
		}
		// Always present this certificate when the server asks for one. With
		// tls.Config.Certificates, Go sends no certificate at all when the
		// server's list of acceptable CAs doesn't name the chain's issuer,
		// and the resulting handshake failure is hard to diagnose.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		}
	}
	return c
}

// loadPool reads the JSON Lines pool and serialises each request to HTTP/1.1 wire bytes.
func loadPool(path, prefix, defHost string) ([]request, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rd := bufio.NewReaderSize(f, 1<<20)
	metas := map[string]*http.Request{}
	var pool []request
	for lineNo := 1; ; lineNo++ {
		line, err := rd.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return nil, err
		}
		if t := bytes.TrimSpace(line); len(t) > 0 {
			r, perr := buildRequest(t, prefix, defHost, metas)
			if perr != nil {
				return nil, fmt.Errorf("%s:%d: %v", path, lineNo, perr)
			}
			pool = append(pool, r)
		}
		if err == io.EOF {
			return pool, nil
		}
	}
}

func buildRequest(line []byte, prefix, defHost string, metas map[string]*http.Request) (request, error) {
	var pl poolLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pl); err != nil {
		return request{}, err
	}
	if !isToken(pl.Method) {
		return request{}, fmt.Errorf("bad method %q", pl.Method)
	}
	if !strings.HasPrefix(pl.Path, "/") || strings.ContainsAny(pl.Path, " \r\n\x00") {
		return request{}, fmt.Errorf("path must start with / and have no spaces or control characters: %q", pl.Path)
	}
	body, err := base64.StdEncoding.DecodeString(pl.BodyB64)
	if err != nil {
		return request{}, fmt.Errorf("body_b64: %v", err)
	}
	hasHost, hasLen := false, false
	for _, h := range pl.Headers {
		if len(h) != 2 {
			return request{}, fmt.Errorf("each header must be [name, value], got %q", h)
		}
		if !isToken(h[0]) {
			return request{}, fmt.Errorf("bad header name %q", h[0])
		}
		if strings.ContainsAny(h[1], "\r\n\x00") {
			return request{}, fmt.Errorf("header %s: value has CR, LF or NUL", h[0])
		}
		switch strings.ToLower(h[0]) {
		case "host":
			if hasHost {
				return request{}, errors.New("two Host headers")
			}
			hasHost = true
		case "content-length":
			if hasLen {
				return request{}, errors.New("two Content-Length headers")
			}
			if n, err := strconv.Atoi(strings.TrimSpace(h[1])); err != nil || n != len(body) {
				return request{}, fmt.Errorf("Content-Length %q but the body has %d bytes", h[1], len(body))
			}
			hasLen = true
		case "transfer-encoding":
			return request{}, errors.New("Transfer-Encoding is not supported: give the whole body in body_b64")
		}
	}
	var b bytes.Buffer
	b.Grow(len(body) + 512)
	b.WriteString(pl.Method)
	b.WriteByte(' ')
	b.WriteString(prefix)
	b.WriteString(pl.Path)
	b.WriteString(" HTTP/1.1\r\n")
	if !hasHost {
		b.WriteString("Host: " + defHost + "\r\n")
	}
	for _, h := range pl.Headers {
		b.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	if !hasLen {
		switch {
		case len(body) > 0, pl.Method == "POST", pl.Method == "PUT", pl.Method == "PATCH":
			b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
		}
	}
	b.WriteString("\r\n")
	b.Write(body)
	m := metas[pl.Method]
	if m == nil {
		m = &http.Request{Method: pl.Method}
		metas[pl.Method] = m
	}
	return request{wire: b.Bytes(), meta: m}, nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

func execute(cfg *config) *report {
	r := &run{cfg: cfg}
	r.tStart.Store(unset)
	r.stoppedBy.Store("")
	if cfg.rate > 0 {
		r.ticks = make(chan tick, 1<<16)
	}
	workers := make([]*worker, cfg.conc)
	var ready, done sync.WaitGroup
	startGate := make(chan struct{})
	// Initial capacity of each worker's latency slices (they grow past it).
	expect := (cfg.maxReqs-cfg.warmup)/int64(cfg.conc) + 16
	if expect > 1<<15 {
		expect = 1 << 15
	}
	for i := range workers {
		w := &worker{r: r, status: map[int]int64{}, errKinds: map[string]int64{},
			lat: make([]int64, 0, expect), svc: make([]int64, 0, expect)}
		if cfg.rate > 0 {
			w.lag = make([]int64, 0, expect)
		}
		workers[i] = w
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			// Connect before the clock starts, so that the first requests'
			// latencies don't include handshakes. A failed connect is retried
			// when the next request needs the connection.
			if err := w.connect(); err != nil {
				w.countErr(err, false)
			}
			ready.Done()
			<-startGate
			if cfg.rate > 0 {
				w.openLoop()
			} else {
				w.closedLoop()
			}
			if w.conn != nil {
				w.conn.Close()
			}
		}()
	}
	ready.Wait()
	cpuU0, cpuS0 := cpuTimes()
	close(startGate)
	if cfg.rate > 0 {
		go r.pace(now() + int64(time.Millisecond))
	} else if cfg.duration > 0 {
		go func() {
			// The measured window opens when the first measured request is
			// claimed (after warmup); the duration counts from there.
			for r.tStart.Load() == unset && !r.stop.Load() {
				time.Sleep(time.Millisecond)
			}
			if r.stop.Load() {
				return
			}
			time.Sleep(time.Duration(r.tStart.Load() + int64(cfg.duration) - now()))
			r.setStop("duration")
		}()
	}
	done.Wait()
	out := r.report(workers)
	cpuU1, cpuS1 := cpuTimes()
	out.CPUUserS, out.CPUSysS = round(cpuU1-cpuU0, 3), round(cpuS1-cpuS0, 3)
	out.CPUSetupS = round(cpuU0+cpuS0, 3)
	return out
}

// setStop tells the workers to take no more requests; the first reason given wins.
func (r *run) setStop(why string) {
	r.setReason(why)
	r.stop.Store(true)
}

// setReason records why the run ended without stopping the workers: the open
// loop's pacer uses it when it has handed out its last request, which a
// worker must still send.
func (r *run) setReason(why string) {
	r.whyOnce.Do(func() { r.stoppedBy.Store(why) })
}

func (r *run) limitReason() string {
	switch {
	case r.cfg.loop:
		return "count"
	case r.cfg.maxReqs < int64(len(r.cfg.pool)):
		return "count"
	}
	return "pool exhausted"
}

// pace is the open loop's clock: it hands request i to the workers at
// t0 + i/rate. It sleeps with nanosleep on its own OS thread (see
// sleepUntil), because Go's timers wake sleeps shorter than 1 ms up to 1 ms late
// on Linux.
func (r *run) pace(t0 int64) {
	defer close(r.ticks)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	preciseTimerThread()
	cfg := r.cfg
	nsPer := 1e9 / cfg.rate
	due := func(i int64) int64 { return t0 + int64(math.Round(float64(i)*nsPer)) }
	r.tStart.Store(due(cfg.warmup))
	end := int64(math.MaxInt64)
	if cfg.duration > 0 {
		end = due(cfg.warmup) + int64(cfg.duration)
	}
	for i := int64(0); i < cfg.maxReqs; i++ {
		d := due(i)
		if d >= end {
			r.setReason("duration")
			return
		}
		if r.stop.Load() {
			return
		}
		sleepUntil(d)
		r.ticks <- tick{idx: i, due: d}
	}
	r.setReason(r.limitReason())
}

func (w *worker) openLoop() {
	for t := range w.r.ticks {
		if w.r.stop.Load() {
			continue // aborted (-max-errors): drain, the pacer may be blocked on a full channel
		}
		w.do(t.idx, t.due)
	}
}

func (w *worker) closedLoop() {
	r := w.r
	for !r.stop.Load() {
		i := r.next.Add(1) - 1
		if i >= r.cfg.maxReqs {
			r.setStop(r.limitReason())
			return
		}
		if i == r.cfg.warmup {
			r.tStart.Store(now())
		}
		w.do(i, unset)
	}
}

var (
	used      atomic.Int64 // pool entries taken, sent or not (a failed connect uses one up)
	totalErrs atomic.Int64
)

// do sends pool entry i and reads its response. due is the intended start (open
// loop) or unset (closed loop, where the latency starts when the worker takes
// the request).
func (w *worker) do(i int64, due int64) {
	cfg := w.r.cfg
	req := &cfg.pool[i%int64(len(cfg.pool))]
	measured := i >= cfg.warmup
	used.Add(1)
	start := now()
	if w.conn == nil {
		if err := w.connect(); err != nil {
			w.countErr(err, measured)
			time.Sleep(10 * time.Millisecond) // the server is down or refusing: don't spin through the pool
			return
		}
	}
	write := now()
	w.conn.SetDeadline(time.Now().Add(cfg.timeout))
	_, err := w.conn.Write(req.wire)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(w.br, req.meta)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	end := now()
	w.onConn++
	if err != nil {
		if w.onConn == 1 && cfg.useTLS {
			// With TLS 1.3 the client's handshake ends before the server has
			// checked the client certificate: a refusal shows up here.
			err = fmt.Errorf("first request on a new connection (client certificate refused?): %w", err)
		}
		w.drop()
		w.countErr(err, measured)
		return
	}
	if resp.Close {
		w.drop() // "Connection: close" or HTTP/1.0: reconnect for the next request
	}
	if ts := w.r.tStart.Load(); ts != unset && end >= ts {
		w.inWindow++
	}
	if !measured {
		return
	}
	w.status[resp.StatusCode]++
	if due == unset {
		w.lat = append(w.lat, end-start)
	} else {
		w.lat = append(w.lat, end-due)
		w.lag = append(w.lag, write-due)
	}
	w.svc = append(w.svc, end-write)
	if end > w.lastEnd {
		w.lastEnd = end
	}
}

func (w *worker) connect() error {
	cfg := w.r.cfg
	d := net.Dialer{Timeout: cfg.timeout}
	c, err := d.Dial("tcp", cfg.addr)
	if err != nil {
		return err
	}
	if cfg.useTLS {
		tc := tls.Client(c, cfg.tlsConf)
		tc.SetDeadline(time.Now().Add(cfg.timeout))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return fmt.Errorf("tls handshake: %w", err)
		}
		tc.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		if st.DidResume {
			w.resumed++
		}
		if w.tls == nil {
			w.tls = &tlsInfo{Version: tlsVersionName(st.Version), Cipher: tls.CipherSuiteName(st.CipherSuite),
				ALPN: st.NegotiatedProtocol}
		}
		c = tc
	}
	w.dials++
	w.onConn = 0
	w.conn = c
	if w.br == nil {
		w.br = bufio.NewReaderSize(c, 32<<10)
	} else {
		w.br.Reset(c)
	}
	return nil
}

func (w *worker) drop() {
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
}

func (w *worker) countErr(err error, measured bool) {
	if measured {
		w.errs++
	}
	// Name the error without the addresses (the local port changes every time).
	var op *net.OpError
	kind := err.Error()
	if errors.As(err, &op) && op.Err != nil {
		// Keep the wrapping context, drop "read tcp 127.0.0.1:PORT->...".
		kind = strings.Replace(kind, op.Error(), op.Op+": "+op.Err.Error(), 1)
	}
	if len(kind) > 160 {
		kind = kind[:160]
	}
	if _, ok := w.errKinds[kind]; !ok && len(w.errKinds) >= 20 {
		kind = "(other)"
	}
	w.errKinds[kind]++
	if n := totalErrs.Add(1); w.r.cfg.errorLimit > 0 && n >= int64(w.r.cfg.errorLimit) {
		w.r.setStop("max-errors")
	}
}

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "1.3"
	case tls.VersionTLS12:
		return "1.2"
	}
	return fmt.Sprintf("0x%04x", v)
}

type report struct {
	Mode        string           `json:"mode"`
	URL         string           `json:"url"`
	Concurrency int              `json:"concurrency"`
	TargetRate  float64          `json:"target_rate"`
	Warmup      int64            `json:"warmup"`
	Pool        int              `json:"pool"`
	Requests    int64            `json:"requests"`
	OK          int64            `json:"ok"`
	Non2xx      int64            `json:"non2xx"`
	Errors      int64            `json:"errors"`
	ElapsedS    float64          `json:"elapsed_s"`
	RPS         float64          `json:"rps"`
	P50         float64          `json:"p50_us"`
	P90         float64          `json:"p90_us"`
	P99         float64          `json:"p99_us"`
	P999        float64          `json:"p999_us"`
	Max         float64          `json:"max_us"`
	Mean        float64          `json:"mean_us"`
	Status      map[string]int64 `json:"status"`
	ServiceP50  float64          `json:"service_p50_us"`
	ServiceP99  float64          `json:"service_p99_us"`
	LagP50      *float64         `json:"start_lag_p50_us,omitempty"`
	LagP99      *float64         `json:"start_lag_p99_us,omitempty"`
	LagMax      *float64         `json:"start_lag_max_us,omitempty"`
	StoppedBy   string           `json:"stopped_by"`
	Used        int64            `json:"used"`
	Unused      *int64           `json:"unused,omitempty"`
	Connections int64            `json:"connections"`
	TLSResumed  int64            `json:"tls_resumed"`
	TLS         *tlsInfo         `json:"tls,omitempty"`
	ErrorKinds  map[string]int64 `json:"error_kinds,omitempty"`
	CPUUserS    float64          `json:"cpu_user_s"`
	CPUSysS     float64          `json:"cpu_sys_s"`
	CPUSetupS   float64          `json:"cpu_setup_s"`
	GoMaxProcs  int              `json:"gomaxprocs"`
}

func (r *run) report(ws []*worker) *report {
	cfg := r.cfg
	out := &report{URL: cfg.url.String(), Concurrency: cfg.conc, TargetRate: cfg.rate, Warmup: cfg.warmup,
		Pool: len(cfg.pool), Status: map[string]int64{}, StoppedBy: r.stoppedBy.Load().(string),
		Used: used.Load(), GoMaxProcs: runtime.GOMAXPROCS(0)}
	out.Mode = "closed"
	if cfg.rate > 0 {
		out.Mode = "open"
	}
	var lat, svc, lag []int64
	var inWindow, tEnd int64
	kinds := map[string]int64{}
	for _, w := range ws {
		lat = append(lat, w.lat...)
		svc = append(svc, w.svc...)
		lag = append(lag, w.lag...)
		for code, n := range w.status {
			out.Status[strconv.Itoa(code)] += n
			if code >= 200 && code < 300 {
				out.OK += n
			} else {
				out.Non2xx += n
			}
		}
		for k, n := range w.errKinds {
			kinds[k] += n
		}
		out.Errors += w.errs
		out.Connections += w.dials
		out.TLSResumed += w.resumed
		inWindow += w.inWindow
		if w.lastEnd > tEnd {
			tEnd = w.lastEnd
		}
		if out.TLS == nil {
			out.TLS = w.tls
		}
	}
	if len(kinds) > 0 {
		out.ErrorKinds = kinds
	}
	out.Requests = out.OK + out.Non2xx + out.Errors
	if !cfg.loop {
		u := int64(len(cfg.pool)) - out.Used
		out.Unused = &u
	}
	if ts := r.tStart.Load(); ts != unset && tEnd > ts {
		el := float64(tEnd-ts) / 1e9
		out.ElapsedS = round(el, 6)
		// Responses completed inside the window (a few warmup requests still in
		// flight when it opens included) per second of window.
		out.RPS = round(float64(inWindow)/el, 1)
	}
	sortInts(lat)
	sortInts(svc)
	sortInts(lag)
	out.P50, out.P90, out.P99, out.P999 = pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 99.9)
	out.ServiceP50, out.ServiceP99 = pct(svc, 50), pct(svc, 99)
	if len(lat) > 0 {
		out.Max = us(lat[len(lat)-1])
		var sum float64
		for _, v := range lat {
			sum += float64(v)
		}
		out.Mean = round(sum/float64(len(lat))/1e3, 1)
	}
	if cfg.rate > 0 && len(lag) > 0 {
		a, b, c := pct(lag, 50), pct(lag, 99), us(lag[len(lag)-1])
		out.LagP50, out.LagP99, out.LagMax = &a, &b, &c
	}
	return out
}

func sortInts(a []int64) { sort.Slice(a, func(i, j int) bool { return a[i] < a[j] }) }

// pct is the nearest-rank percentile of sorted nanoseconds, in microseconds.
func pct(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if k < 0 {
		k = 0
	}
	return us(sorted[k])
}

func us(ns int64) float64 { return round(float64(ns)/1e3, 1) }

func round(x float64, digits int) float64 {
	m := math.Pow(10, float64(digits))
	return math.Round(x*m) / m
}
