package inbox

// SetBeforeCommit installs a hook that runs after a poll's rows are stored
// and before its offsets are committed; an error from it ends Run there.
func SetBeforeCommit(c *InboxConsumer, f func() error) { c.beforeCommit = f }
