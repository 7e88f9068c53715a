package dev.paywatch.example;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.logging.log4j.CloseableThreadContext;
import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;

/**
 * A payment service that reports to paywatch only through Log4j 2: payment events are ordinary
 * log calls with the paywatch fields in the ThreadContext, the heartbeat is a scheduled log call.
 * src/main/resources/log4j2.xml sends the "paywatch.payments" and "paywatch.heartbeat" loggers to
 * Kafka as ECS JSON; nothing here knows about Kafka or JSON.
 *
 * <p>The demo: {@code --healthy N} orders are paid normally; {@code --stuck M} orders are charged
 * and called back by the channel, but the callback is never applied to the order (the jammed
 * callback queue of the lost-callback incident), so they stay paid-but-pending. Then the service
 * keeps beating until it is stopped (SIGTERM), and sends a last "stopping" beat.
 */
public final class PaymentService {
    private static final Logger PAYMENTS = LogManager.getLogger("paywatch.payments");
    private static final Logger HEARTBEAT = LogManager.getLogger("paywatch.heartbeat");
    private static final Logger LOG = LogManager.getLogger(PaymentService.class);

    private final String channel;
    private final AtomicLong beats = new AtomicLong();
    private final long beatIntervalS;

    PaymentService(String channel, long beatIntervalS) {
        this.channel = channel;
        this.beatIntervalS = beatIntervalS;
    }

    /** One payment event: the fields go into the ThreadContext for this one log call. */
    private static void payment(String action, String outcome, Map<String, String> fields, String message) {
        try (CloseableThreadContext.Instance ctx = CloseableThreadContext.putAll(fields)) {
            ctx.put("event.action", action);
            if (outcome != null) {
                ctx.put("event.outcome", outcome);
            }
            PAYMENTS.info(message);
        }
    }

    void checkout(String orderId, long amountMinor, boolean callbackApplied) {
        Map<String, String> order = new LinkedHashMap<>();
        order.put("payment.order_id", orderId);
        order.put("payment.amount_minor", Long.toString(amountMinor));
        order.put("payment.currency", "CNY");
        payment("order_created", null, order, "order created");

        Map<String, String> attempt = new LinkedHashMap<>(order);
        attempt.put("payment.attempt_id", orderId + "-a1");
        attempt.put("payment.channel", channel);
        attempt.put("payment.method", "wallet");
        payment("payment_requested", "unknown", attempt, "payment requested at " + channel);

        Map<String, String> callback = new LinkedHashMap<>(attempt);
        callback.put("payment.status", "TRADE_SUCCESS");
        payment("channel_callback", "success", callback, "channel says paid");

        if (callbackApplied) {
            Map<String, String> paid = new LinkedHashMap<>(attempt);
            paid.put("payment.status", "paid");
            payment("order_paid", "success", paid, "order marked paid");
        } else {
            LOG.warn("callback for {} queued but not applied", orderId);
        }
    }

    void beat(String status) {
        try (CloseableThreadContext.Instance ctx = CloseableThreadContext.put("heartbeat.status", status)) {
            ctx.put("heartbeat.interval_s", Long.toString(beatIntervalS));
            ctx.put("heartbeat.seq", Long.toString(beats.getAndIncrement()));
            HEARTBEAT.info("heartbeat");
        }
    }

    public static void main(String[] args) throws InterruptedException {
        Map<String, String> opts = new LinkedHashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            opts.put(args[i].replaceFirst("^--", ""), args[i + 1]);
        }
        int healthy = Integer.parseInt(opts.getOrDefault("healthy", "4"));
        int stuck = Integer.parseInt(opts.getOrDefault("stuck", "6"));
        String prefix = opts.getOrDefault("order-prefix", "ORD");
        PaymentService service =
                new PaymentService(opts.getOrDefault("channel", "alipay"), Long.parseLong(opts.getOrDefault("beat-interval", "5")));

        ScheduledExecutorService beats = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "paywatch-heartbeat");
            t.setDaemon(true);
            return t;
        });
        CountDownLatch stopped = new CountDownLatch(1);
        CountDownLatch finished = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            stopped.countDown();
            beats.shutdown();
            try {
                beats.awaitTermination(5, TimeUnit.SECONDS);
                service.beat("stopping"); // silence after this is a planned stop, not an incident
                finished.await(5, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            LogManager.shutdown(); // flushes the Kafka appenders
        }));
        beats.scheduleAtFixedRate(() -> service.beat("up"), 0, service.beatIntervalS, TimeUnit.SECONDS);

        for (int i = 0; i < healthy; i++) {
            service.checkout(prefix + "-ok-" + i, 1000 + i, true);
        }
        for (int i = 0; i < stuck; i++) {
            service.checkout(prefix + "-stuck-" + i, 2000 + i, false);
        }
        LOG.info("logged {} healthy and {} stuck orders; beating until stopped", healthy, stuck);
        finished.countDown();
        stopped.await();
    }
}
