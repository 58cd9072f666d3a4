package main

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestUnreachableBroker: with no broker at KAFKA_BROKER the simulator stops
// within seconds with an error naming the variable and the address, instead
// of waiting in silence.
func TestUnreachableBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, broker := range []string{addr, "no-such-host.invalid:9092"} {
		env := map[string]string{"KAFKA_BROKER": broker}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		start := time.Now()
		err := run(ctx, nil, func(k string) string { return env[k] }, io.Discard, io.Discard)
		cancel()
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "KAFKA_BROKER") || !strings.Contains(err.Error(), broker) {
			t.Errorf("KAFKA_BROKER=%s: run = %v, want an error naming KAFKA_BROKER and the address", broker, err)
		}
		if took > 20*time.Second {
			t.Errorf("KAFKA_BROKER=%s: reported after %v, want within seconds", broker, took.Round(time.Second))
		}
	}
}

// TestLogSettings: LOG_FORMAT and LOG_LEVEL shape the simulator's log as
// they shape orders-service's, and -h lists them.
func TestLogSettings(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing answers: the run logs its check of the brokers at debug, then ends
	for _, tc := range []struct {
		format, level string
		want          func(string) bool
	}{
		{"text", "debug", func(s string) bool { return strings.Contains(s, "level=DEBUG") && !strings.Contains(s, `"level"`) }},
		{"json", "debug", func(s string) bool { return strings.Contains(s, `"level":"DEBUG"`) }},
		{"text", "info", func(s string) bool { return !strings.Contains(s, "DEBUG") }},
	} {
		env := map[string]string{"KAFKA_BROKER": addr, "LOG_FORMAT": tc.format, "LOG_LEVEL": tc.level}
		var log strings.Builder
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		run(ctx, nil, func(k string) string { return env[k] }, io.Discard, &log)
		cancel()
		if !tc.want(log.String()) {
			t.Errorf("LOG_FORMAT=%s LOG_LEVEL=%s: log\n%s", tc.format, tc.level, log.String())
		}
	}
	if _, err := loadConfig(func(k string) string { return map[string]string{"LOG_LEVEL": "loud"}[k] }); err == nil || !strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Errorf("LOG_LEVEL=loud: %v, want an error naming it", err)
	}
	var help strings.Builder
	run(context.Background(), []string{"-h"}, func(string) string { return "" }, &help, io.Discard)
	for _, want := range []string{"LOG_FORMAT", "LOG_LEVEL", "answers each", "KAFKA_TOPIC (default orders.events)\n    \tconsumes"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("-h lacks %q:\n%s", want, help.String())
		}
	}
}
