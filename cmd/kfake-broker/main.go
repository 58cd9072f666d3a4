// Command kfake-broker runs the embedded development Kafka broker (franz-go's
// kfake) as its own process, for kcat demos and process-level tests. It
// prints the address it listens on as its first line of output and stops on
// SIGINT or SIGTERM, saving its state when -data-dir is set.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/acme/orders-service/internal/buildinfo"
	"github.com/acme/orders-service/kafka"
)

func main() {
	if err := run(os.Args[1:]); errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "kfake-broker:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("kfake-broker", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:9092", "TCP address to listen on (port 0 picks a free port)")
	dataDir := fs.String("data-dir", "", "directory to persist the broker's data in (empty keeps it in memory)")
	partitions := fs.Int("partitions", 0, "partitions of topics created with the broker default (0 keeps kfake's 10)")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version {
		fmt.Println("kfake-broker", buildinfo.Read())
		return nil
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *partitions < 0 {
		return fmt.Errorf("-partitions: must not be negative, got %d", *partitions)
	}

	// Notify before starting, so a signal sent right after the address is
	// printed is never missed.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)

	opts := []kafka.EmbeddedOption{
		kafka.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	}
	if *dataDir != "" {
		opts = append(opts, kafka.WithDataDir(*dataDir))
	}
	if *partitions > 0 {
		opts = append(opts, kafka.WithDefaultPartitions(*partitions))
	}
	b, err := kafka.StartEmbedded(*addr, opts...)
	if err != nil {
		return err
	}
	fmt.Println(b.Addr())

	sig := <-sigs
	fmt.Fprintf(os.Stderr, "kfake-broker: %v, shutting down\n", sig)
	b.Close()
	return nil
}
