package kafkatest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// StuckTransaction makes c answer as a real cluster does whose transaction
// of transactional id id ended (state PrepareAbort, PrepareCommit or
// PrepareEpochFence) but cannot write its marker to a partition without a
// leader: every InitProducerId of id, every AddPartitionsToTxn of id and
// every partition of a produce request of id (a new transaction's first
// records) get CONCURRENT_TRANSACTIONS, and id's transaction is described
// in state, as having written partition 0 of topic (a topic c does not
// have stands for a partition without a leader). Other ids are served as
// usual.
func StuckTransaction(c *kfake.Cluster, id, state, topic string) {
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.ProduceRequest)
		if req.TransactionID == nil || *req.TransactionID != id {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.ConcurrentTransactions.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	c.ControlKey(int16(kmsg.AddPartitionsToTxn), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.AddPartitionsToTxnRequest)
		if req.TransactionalID != id {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewAddPartitionsToTxnResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
				sp.Partition, sp.ErrorCode = p, kerr.ConcurrentTransactions.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	c.ControlKey(int16(kmsg.InitProducerID), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.InitProducerIDRequest)
		if req.TransactionalID == nil || *req.TransactionalID != id {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.ConcurrentTransactions.Code
		return resp, nil, true
	})
	c.ControlKey(int16(kmsg.DescribeTransactions), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.DescribeTransactionsRequest)
		if len(req.TransactionalIDs) != 1 || req.TransactionalIDs[0] != id {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
		st := kmsg.NewDescribeTransactionsResponseTransactionState()
		st.TransactionalID, st.State, st.ProducerID = id, state, 1
		wrote := kmsg.NewDescribeTransactionsResponseTransactionStateTopic()
		wrote.Topic, wrote.Partitions = topic, []int32{0}
		st.Topics = append(st.Topics, wrote)
		resp.TransactionStates = append(resp.TransactionStates, st)
		return resp, nil, true
	})
}

// UnfinishedCommit makes c answer as a real cluster does whose coordinator
// wrote the commit of id's next transaction that ends with a commit, but
// cannot finish it because a partition the transaction wrote lost its
// leader: the commit markers are written to every partition of topic
// (records there become visible to read_committed consumers), that EndTxn
// and every later one of id are answered CONCURRENT_TRANSACTIONS, and id is
// then StuckTransaction in PrepareCommit, having written a partition without
// a leader. The returned channel says, once, whether the markers were
// written (nil) or why not.
func UnfinishedCommit(c *kfake.Cluster, id, topic string, partitions int32) <-chan error {
	written := make(chan error, 1)
	var once sync.Once
	c.ControlKey(int16(kmsg.EndTxn), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.EndTxnRequest)
		if req.TransactionalID != id {
			return nil, nil, false
		}
		if req.Commit {
			once.Do(func() { go commitMarkers(c, id, topic, partitions, req.ProducerID, req.ProducerEpoch, written) })
		}
		resp := req.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.ConcurrentTransactions.Code
		return resp, nil, true
	})
	return written
}

// commitMarkers writes the commit markers of producer id's transaction to
// every partition of topic, as a coordinator does once the commit is in its
// log, then makes id StuckTransaction in PrepareCommit.
func commitMarkers(c *kfake.Cluster, id, topic string, partitions int32, producerID int64, epoch int16, written chan<- error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		written <- err
		return
	}
	defer cl.Close()
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	m := kmsg.NewWriteTxnMarkersRequestMarker()
	m.ProducerID, m.ProducerEpoch, m.Committed = producerID, epoch, true
	mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
	mt.Topic = topic
	for p := range partitions {
		mt.Partitions = append(mt.Partitions, p)
	}
	m.Topics = append(m.Topics, mt)
	req.Markers = append(req.Markers, m)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		written <- fmt.Errorf("write transaction markers: %w", err)
		return
	}
	for _, m := range resp.Markers {
		for _, t := range m.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					written <- fmt.Errorf("write transaction marker to partition %d: %w", p.Partition, err)
					return
				}
			}
		}
	}
	StuckTransaction(c, id, "PrepareCommit", "gone")
	written <- nil
}
